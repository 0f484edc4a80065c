"""python -m backpack_dist.bench --first_contact --out DIR: everything a first lent GPU should tell
us, most valuable first, in about 7 minutes. Each stage (stages.py) runs in its own process under its
own time limit, so a hang or a crash of one keeps the others; each writes DIR/STAGE.json as its
figures come and DIR/STAGE.log; DIR/summary.json and DIR/summary.md list every stage's status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .. import atomic

# (stage, seconds allowed on the GPU), most valuable first; 420 s in all.
STAGE_LIMITS = (
    ("environment", 20),
    ("logits", 40),
    ("engine", 170),
    ("sense_sum", 60),
    ("memory", 40),
    ("resume", 90),
)
DRY_RUN_LIMIT_S = 300  # per stage on a (shared, slow) CPU at tiny shapes


def run_stage(stage: str, limit_s: float, out: Path, dry_run: bool) -> dict:
    """One stage in a session of its own: on a timeout its whole process group is killed."""
    cmd = [sys.executable, "-m", "backpack_dist.bench.stages", stage, "--out", str(out)] + (["--dry_run"] if dry_run
                                                                                            else [])
    start = time.time()
    with open(out / f"{stage}.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=limit_s)
            status = "ok" if rc == 0 else f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            status = f"timeout after {limit_s:.0f} s"
    figures = out / f"{stage}.json"
    n = len(json.loads(figures.read_text())["figures"]) if figures.is_file() else 0
    return {"stage": stage, "status": status, "seconds": round(time.time() - start, 1), "limit_s": limit_s,
            "figures": n, "figures_file": figures.name, "log": f"{stage}.log"}


def summary_markdown(rows: list[dict], dry_run: bool) -> str:
    lines = [f"# First GPU contact{' (dry run: CPU, tiny shapes)' if dry_run else ''}", "",
             "| stage | status | seconds | limit s | figures |", "|---|---|---|---|---|"]
    lines += [f"| {r['stage']} | {r['status']} | {r['seconds']} | {r['limit_s']} | {r['figures']} "
              f"({r['figures_file']}) |"
              for r in rows]
    return "\n".join(lines) + "\n"


def first_contact(out: Path, dry_run: bool = False) -> int:
    """Run every stage; 0 when all succeeded, 1 otherwise (what finished is kept either way)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for stage, limit_s in STAGE_LIMITS:
        print(f"... first contact: {stage} (limit {DRY_RUN_LIMIT_S if dry_run else limit_s} s)", flush=True)
        rows.append(run_stage(stage, DRY_RUN_LIMIT_S if dry_run else limit_s, out, dry_run))
        print(f"    {rows[-1]['status']} in {rows[-1]['seconds']} s", flush=True)
        # Rewritten after every stage: an outer timeout still leaves a summary of what ran.
        atomic.write_json(out / "summary.json", {"dry_run": dry_run, "stages": rows}, indent=2)
        atomic.write_text(out / "summary.md", summary_markdown(rows, dry_run))
    print(summary_markdown(rows, dry_run))
    return 0 if all(r["status"] == "ok" for r in rows) else 1
