"""python -m backpack_dist.train --model backpack-small --data_dir OUT --run_dir RUN --ds_config ds_configs/zero2.json

Launch as one plain process, under `deepspeed --num_gpus N -m backpack_dist.train ...`, or under
`torchrun`. Every TrainConfig field is a flag (defaults: the paper's recipe), or a key of a --config
file (configs/*.toml, or a run's RUN/config.json to re-create it); flags win over the file. Re-running the same
command on a RUN with checkpoints resumes from the newest complete one.
"""

from .. import cli
from .config import TrainConfig


def train(cfg: TrainConfig) -> int:
    """Train (or resume) one run: every flag is a field of backpack_dist/train/config.py, whose
    defaults are the paper's recipe; re-running the same command resumes from the newest
    complete checkpoint in --run_dir."""
    from .loop import train as train_loop

    return train_loop(cfg)


if __name__ == "__main__":
    # deepspeed's launcher appends --local_rank=N; the rank is read from the environment instead.
    from .run_dir import RECORDED_KEYS

    cli.run(train, name="python -m backpack_dist.train", ignore=("local_rank",), recorded=RECORDED_KEYS)
