"""python -m backpack_dist.train --model backpack-small --data_dir OUT --run_dir RUN --ds_config ds_configs/zero2.json

Launch as one plain process, under `deepspeed --num_gpus N -m backpack_dist.train ...`, or under
`torchrun`. Every TrainConfig field is a flag (defaults: the paper's recipe). Re-running the same
command on a RUN with checkpoints resumes from the newest complete one.
"""

import sys

from .. import cli
from .config import ConfigError, TrainConfig


def main(**flags):
    known = set(TrainConfig.__dataclass_fields__)
    # deepspeed's launcher appends --local_rank=N; the rank is read from the environment instead.
    flags.pop("local_rank", None)
    unknown = sorted(set(flags) - known)
    if unknown:
        names = ", ".join("--" + u for u in unknown)
        raise ConfigError(f"unknown flag(s) {names}; the flags are the fields of backpack_dist/train/config.py")
    if isinstance(flags.get("betas"), list):  # fire reads 0.9,0.95 as a tuple, [0.9,0.95] as a list
        flags["betas"] = tuple(flags["betas"])
    cfg = TrainConfig(**flags)
    from .loop import train

    sys.exit(train(cfg))


if __name__ == "__main__":
    cli.run(main, name="python -m backpack_dist.train", errors=(ConfigError,))
