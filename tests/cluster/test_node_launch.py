"""slurm/lib/node_launch.sh's torchrun path (GPUS_PER_NODE > 1), which the CPU cluster test does not
take: SIGUSR1 to the launcher reaches the training workers, not torchrun, and they save and stop."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_helpers import TINY, free_port

from backpack_dist import checkpoint
from data_prep import prepare_and_merge

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_torchrun_launcher_passes_usr1_to_its_workers(tmp_path, shared_data):
    data = tmp_path / "data"
    prepare_and_merge([shared_data / "openwebtext_sample" / "owt_first_docs_concat.txt"], data, seq_len=64,
                      val_fraction=0.05)
    run = tmp_path / "run"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "SLURM_NODEID": "0", "SLURM_NNODES": "1", "GPUS_PER_NODE": "2", "LAUNCHER": "auto",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    args = ["--model", "backpack-micro", *TINY, "--data_dir", str(data), "--run_dir", str(run),
            "--ds_config", str(REPO / "ds_configs" / "zero1.json"), "--global_batch", "8", "--micro_batch", "2",
            "--max_steps", "200", "--log_every", "1", "--save_every", "10", "--eval_every", "1000",
            "--wandb", "disabled", "--num_workers", "1"]  # a DataLoader worker process too
    log = tmp_path / "launcher.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", str(REPO / "slurm" / "lib" / "node_launch.sh"), *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        first = run / "checkpoints" / checkpoint.tag_for_step(10) / checkpoint.COMPLETE
        deadline = time.time() + 180
        while not first.is_file():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGUSR1)  # what srun passes on to its task
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text()
    stopped = re.search(r"stopped by signal 10 after saving step (\d+)", text)
    assert stopped, text[-3000:]
    step = int(stopped[1])
    assert 10 <= step < 200
    assert checkpoint.latest_complete_step(run / "checkpoints") == step
    assert checkpoint.saved_world_size(run, step) == 2
    assert proc.returncode == 1  # torchrun's status when a worker exits non-zero (75 here)
    assert "exitcode  : 75" in text
