"""How far bf16 training's accumulated gradients are from fp32, per ZeRO stage and accumulation dtype.

    python -m backpack_dist.train.accum_precision [--accum 16] [--settings zero0-bf16,...] [--out FILE.json]

One process on CPU (gloo), real DeepSpeed engines built as training builds them
(engine.build_engine over ds_configs/zeroN.json), a tiny Backpack, `accum` micro batches. For each
setting: the full gradient after the last backward (before the step, so before clipping), against
an fp32 reference: the same weights and micro batches through plain torch fp32 autograd, the
micro-batch gradients summed / accum. Figure: relative error ||g - ref||_F / ||ref||_F over all
parameters. DeepSpeed's bf16 keeps bf16 weights, so every setting runs forward and backward in bf16
(the weights are rounded to bf16 for the reference too); settings differ only in how the
micro-batch gradients are summed. docs/benchmarks.md has the figures."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from .. import atomic, cli

DS_CONFIGS = Path(__file__).resolve().parents[2] / "ds_configs"
# name -> (ZeRO stage, grad_accum_dtype written in the JSON; None: what engine.deepspeed_config chooses)
SETTINGS = {"zero0-bf16": (0, None), "zero1-bf16": (1, None), "zero2-bf16": (2, "bf16"),
            "zero2-fp32": (2, None), "zero3-fp32": (3, None)}


@dataclasses.dataclass(frozen=True)
class AccumPrecisionOptions:
    accum: int = 16
    """Micro batches summed into one gradient (gradient_accumulation_steps)."""
    micro_batch: int = 4
    """Sequences per micro batch."""
    seq_len: int = 64
    """Tokens per sequence."""
    settings: tuple[str, ...] = tuple(SETTINGS)
    """Which settings to measure: zero0-bf16, zero1-bf16, zero2-bf16, zero2-fp32, zero3-fp32 (zeroN-fp32 and
    zero0/1-bf16 are the trainer's defaults; zero2-bf16 sets data_types.grad_accum_dtype bf16)."""
    seed: int = 0
    """Seeds the weights and the micro batches."""
    out: str | None = None
    """A JSON file for the figures."""

    def __post_init__(self):
        cli.check_range(self, "accum", 1)
        cli.check_range(self, "micro_batch", 1)
        cli.check_range(self, "seq_len", 2, 256)
        unknown = [s for s in self.settings if s not in SETTINGS]
        if unknown or not self.settings:
            raise cli.UsageError(f"--settings {','.join(unknown) or '(none)'}: choose from {','.join(SETTINGS)}")


def tiny_model(seq_len: int):
    from ..model import build_model

    return build_model("backpack-micro", d_model=64, n_layer=2, n_head=2, n_senses=4, vocab_size=512,
                       seq_len=seq_len, dropout=0.0)


def flat_grads(grads) -> torch.Tensor:
    return torch.cat([g.detach().float().flatten() for g in grads])


def reference_grad(state: dict, batches, seq_len: int, dtype: torch.dtype) -> torch.Tensor:
    """sum over micro batches of the gradient of loss / len(batches), each computed in plain torch
    with weights in `dtype` and summed in fp32 (with bf16: the gradients DeepSpeed's bf16 sums)."""
    model = tiny_model(seq_len)
    model.load_state_dict(state)
    model.to(dtype)
    total = 0
    for x, y in batches:
        model.zero_grad()
        (model(x, targets=y) / len(batches)).backward()
        total = total + flat_grads(p.grad for p in model.parameters())
    return total


def engine_grad(setting: str, state: dict, batches, o: AccumPrecisionOptions) -> tuple[torch.Tensor, str]:
    """(the full accumulated gradient after the last backward, the dtype DeepSpeed accumulated in)."""
    from deepspeed.utils import safe_get_full_grad

    from .config import TrainConfig
    from .engine import build_engine

    stage, accum_dtype = SETTINGS[setting]
    base = json.loads((DS_CONFIGS / f"zero{stage}.json").read_text())
    if accum_dtype is not None:
        base["data_types"] = {"grad_accum_dtype": accum_dtype}
    cfg = TrainConfig(global_batch=o.accum * o.micro_batch, micro_batch=o.micro_batch, precision="bf16")
    model = tiny_model(o.seq_len)
    model.load_state_dict(state)
    engine, _, _ = build_engine(model, cfg, base, 1)
    for i, (x, y) in enumerate(batches):
        engine.backward(engine(x, targets=y))  # DeepSpeed divides each micro batch's loss by accum
        if i < len(batches) - 1:
            engine.step()  # counts the micro batch (no optimizer step before the boundary), as training does
    assert engine.is_gradient_accumulation_boundary()
    grad = flat_grads(safe_get_full_grad(p) for p in engine.module.parameters())
    dtype = str(engine.get_data_types()[1]).removeprefix("torch.")
    engine.destroy()
    return grad, dtype


def relative_error(grad: torch.Tensor, ref: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(grad - ref) / torch.linalg.vector_norm(ref))


def measure(o: AccumPrecisionOptions) -> dict:
    from .engine import init_distributed
    from .exactness import fix_cpu_threads

    init_distributed()
    fix_cpu_threads(1)  # the same last bits on any machine (exactness.py), and no spinning threads on a busy one
    torch.manual_seed(o.seed)
    # Rounded to bf16 once, so the reference starts from exactly the weights DeepSpeed's bf16 trains.
    state = {k: v.to(torch.bfloat16).float() for k, v in tiny_model(o.seq_len).state_dict().items()}
    vocab = tiny_model(o.seq_len).config.vocab_size
    tokens = torch.randint(0, vocab, (o.accum, o.micro_batch, o.seq_len + 1))
    batches = [(t[:, :-1], t[:, 1:]) for t in tokens]
    ref = reference_grad(state, batches, o.seq_len, torch.float32)
    bf16_summed_in_fp32 = reference_grad(state, batches, o.seq_len, torch.bfloat16)
    rows = {"torch-bf16-fp32sum": {"grad_accum_dtype": "float32 (plain torch)", "accumulation_error": 0.0,
                                   "relative_error": relative_error(bf16_summed_in_fp32, ref)}}
    for setting in o.settings:
        grad, dtype = engine_grad(setting, state, batches, o)
        rows[setting] = {"grad_accum_dtype": dtype, "relative_error": relative_error(grad, ref),
                         "accumulation_error": relative_error(grad, bf16_summed_in_fp32)}
    return {"accum": o.accum, "micro_batch": o.micro_batch, "seq_len": o.seq_len, "seed": o.seed,
            "model": "backpack-micro d_model=64 n_layer=2 n_head=2 n_senses=4 vocab=512",
            "deepspeed": __import__("deepspeed").__version__, "torch": torch.__version__, "settings": rows}


def run(o: AccumPrecisionOptions) -> None:
    """Relative error of each setting's accumulated bf16 gradient against an fp32 reference (see module doc)."""
    result = measure(o)
    print(f"accumulation {o.accum}, micro batch {o.micro_batch} x {o.seq_len}: ||g - g_fp32|| / ||g_fp32||")
    print(f"{'setting':20s} {'accum dtype':22s} {'vs fp32':>9s} {'vs bf16 grads summed in fp32':>29s}")
    for name, row in result["settings"].items():
        errors = f"{row['relative_error']:9.3e} {row['accumulation_error']:29.3e}"
        print(f"{name:20s} {row['grad_accum_dtype']:22s} {errors}")
    if o.out:
        atomic.write_json(o.out, result, indent=1)


if __name__ == "__main__":
    cli.run(run, name="python -m backpack_dist.train.accum_precision")
