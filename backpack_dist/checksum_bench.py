"""python -m backpack_dist.checksum_bench [--gib 2.0] [--dir DIR]: what checking a checkpoint's
sums costs. Writes a checkpoint-like set of files (default ~2 GiB: a Small backpack's fp32
weights, Adam's two moments and the master copy, split like 2 ranks' files), then prints the
seconds and MB/s of checkpoint_integrity.manifest (at save) and damage (at resume or read), cold
and warm page cache aside: the figures in docs/cluster.md."""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .checkpoint_integrity import COMPLETE, damage, manifest


@dataclass(frozen=True)
class ChecksumBenchOptions:
    gib: float = 2.0
    """size of the checkpoint-like files, GiB (2: a Small backpack's weights and Adam state)"""
    dir: str | None = None
    """where to write them (default: the temp folder); put it on the filesystem checkpoints live on"""


def bench(options: ChecksumBenchOptions) -> dict:
    gib = options.gib
    with tempfile.TemporaryDirectory(dir=options.dir) as tmp:
        folder = Path(tmp)
        sizes = {"mp_rank_00_model_states.pt": 0.25, "zero_pp_rank_0_mp_rank_00_optim_states.pt": 0.375,
                 "zero_pp_rank_1_mp_rank_00_optim_states.pt": 0.375}
        total = 0
        for name, share in sizes.items():
            n = int(gib * share * (1 << 30))
            with open(folder / name, "wb") as f:
                for _ in range(0, n, 64 << 20):
                    f.write(os.urandom(min(64 << 20, n - f.tell())))
            total += n
        t = time.perf_counter()
        files = manifest(folder)
        save_s = time.perf_counter() - t
        (folder / COMPLETE).write_text(json.dumps({"step": 1, "world_size": 2, "files": files}))
        t = time.perf_counter()
        assert damage(folder) is None
        check_s = time.perf_counter() - t
    mb = total / 1e6
    result = {"MB": round(mb), "sum_at_save_s": round(save_s, 2), "sum_at_save_MB_s": round(mb / save_s),
              "check_s": round(check_s, 2), "check_MB_s": round(mb / check_s)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    from . import cli

    cli.run(bench)
