"""python -m backpack_dist.train --model backpack-small --data_dir OUT --run_dir RUN --ds_config ds_configs/zero2.json

Launch as one plain process, under `deepspeed --num_gpus N -m backpack_dist.train ...`, or under
`torchrun`. Every TrainConfig field is a flag (defaults: the paper's recipe). Re-running the same
command on a RUN with checkpoints resumes from the newest complete one.
"""

import dataclasses
import inspect
import sys

from .. import cli
from .config import ConfigError, TrainConfig


def main(**flags):
    """Train (or resume) one run: every flag is a field of backpack_dist/train/config.py, whose
    defaults are the paper's recipe; re-running the same command resumes from the newest
    complete checkpoint in --run_dir."""
    # deepspeed's launcher appends --local_rank=N; the rank is read from the environment instead.
    flags.pop("local_rank", None)
    if isinstance(flags.get("betas"), list):  # fire reads 0.9,0.95 as a tuple, [0.9,0.95] as a list
        flags["betas"] = tuple(flags["betas"])
    cfg = TrainConfig(**flags)
    from .loop import train

    sys.exit(train(cfg))


# fire reads the flags from this signature: --help lists every TrainConfig field with its
# default, and cli.run refuses unknown or repeated flags before anything starts.
main.__signature__ = inspect.Signature(
    [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                       default=f.default if f.default is not dataclasses.MISSING else f.default_factory())
     for f in dataclasses.fields(TrainConfig)]
    + [inspect.Parameter("local_rank", inspect.Parameter.KEYWORD_ONLY, default=None)])


if __name__ == "__main__":
    cli.run(main, name="python -m backpack_dist.train", errors=(ConfigError,))
