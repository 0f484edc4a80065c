"""What a figure was measured on: library versions, the device, and a measured matmul ceiling."""

from __future__ import annotations

import importlib.metadata
import time

import torch

from .device import synchronize


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    cuda = torch.cuda.is_available()
    nccl = None
    if cuda and torch.distributed.is_nccl_available():
        nccl = ".".join(map(str, torch.cuda.nccl.version()))
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": cudnn, "nccl": nccl,
            "deepspeed": _version("deepspeed"), "triton": _version("triton"),
            "mosaicml-streaming": _version("mosaicml-streaming"),
            "device_name": torch.cuda.get_device_name() if cuda else "cpu"}


def matmul_ceiling(device: torch.device, size: int | None = None, repeats: int = 10) -> dict:
    """FLOP/s of square matmuls timed on `device`: bf16 8192^3 on a GPU, fp32 512^3 on a CPU. The
    achievable ceiling to read MFU against, beside the data-sheet peak."""
    gpu = device.type == "cuda"
    size = size or (8192 if gpu else 512)
    dtype = torch.bfloat16 if gpu else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):  # warm-up: cuBLAS picks its kernel on the first call
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    seconds = (time.perf_counter() - start) / repeats
    return {"size": size, "dtype": str(dtype).removeprefix("torch."), "seconds": seconds,
            "flops_per_s": 2 * size**3 / seconds}
