"""data_prep as real processes: a one-job prep is ready to train on, three concurrent CLI jobs
+ merge equal one job, a job killed with SIGKILL mid-part and rerun (with two workers) equals an
uninterrupted one, CLI errors."""

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_helpers import metrics, run_training, tiny_run_args

import data_prep
from data_prep.parts import read_prep

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
OPTIONS = ["--seq_len", "256", "--val_fraction", "0.02", "--part_mb", "0.1", "--progress", "False"]
KWARGS = dict(seq_len=256, val_fraction=0.02, part_mb=0.1)


def inputs(shared_data) -> list[str]:
    return [
        str(shared_data / "openwebtext_sample/webtext_gpt2_train_subset.jsonl"),
        str(shared_data / "openwebtext_sample/c4_en_train00000_first1000.jsonl"),
        str(shared_data / "tinyshakespeare/input.txt"),
        str(shared_data / "wikitext2/wiki.test.raw"),
    ]


def cli(*args, **popen):
    return subprocess.Popen([sys.executable, "-m", "data_prep", *map(str, args)], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def run_cli(*args, env=None):
    p = cli(*args, env=env)
    out, err = p.communicate(timeout=300)
    return p.returncode, out, err


@pytest.fixture(scope="module")
def reference(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "out"
    data_prep.prepare_and_merge(inputs(shared_data), out, **KWARGS)
    return out


def documents(out):
    return {split: list(data_prep.iter_document_tokens(out, split)) for split in ("train", "val")}


def same_documents(a, b):
    da, db = documents(a), documents(b)
    return all(len(da[s]) == len(db[s]) and all((x == y).all() for x, y in zip(da[s], db[s], strict=True))
               for s in da)


def shard_hashes(out):
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.glob("*/part-*/*.zstd"))}


def test_one_job_prep_merges_itself_and_trains(shared_data, tmp_path):
    """The reported break: `text` without --num_shards, then train, said "not a merged data-prep output"."""
    out, run = tmp_path / "out", tmp_path / "run"
    rc, stdout, err = run_cli("text", "--input", shared_data / "tinyshakespeare/input.txt", "--out_dir", out,
                              "--seq_len", "64", "--val_fraction", "0.05", "--progress", "False")
    assert rc == 0, err
    assert json.loads(stdout)["merged"] == str(out / "dataset.json")
    assert data_prep.read_dataset_info(out)["seq_len"] == 64
    result = run_training(1, tiny_run_args("backpack-micro", out, run, steps=2))
    assert result.returncode == 0, result.stderr[-2000:]
    assert [m["step"] for m in metrics(run) if "loss" in m] == [1, 2]


def test_three_concurrent_jobs_and_merge_equal_one_job(shared_data, reference, tmp_path):
    out = tmp_path / "out"
    jobs = [cli("text", "--input", ",".join(inputs(shared_data)), "--out_dir", out, "--num_shards", 3,
                "--shard_index", i, *OPTIONS) for i in range(3)]
    for job in jobs:
        stdout, err = job.communicate(timeout=300)
        assert job.returncode == 0, err
        assert json.loads(stdout)["merged"] is None  # a job of an array leaves the merge to `merge`
    # every job has ended and every part is committed, yet an array's output needs `merge`
    with pytest.raises(ValueError, match=f"not a merged data-prep output .*data_prep merge --out_dir {out}"):
        data_prep.read_dataset_info(out)
    rc, _, err = run_cli("merge", "--out_dir", out)
    assert rc == 0, err
    info, ref = data_prep.read_dataset_info(out), data_prep.read_dataset_info(reference)
    assert info["num_parts"] >= 20 and info["splits"] == ref["splits"]
    assert same_documents(out, reference)
    assert shard_hashes(out) == shard_hashes(reference)


def test_job_killed_mid_part_and_rerun_gives_the_same_result(shared_data, reference, tmp_path):
    out = tmp_path / "out"
    args = ["text", "--input", ",".join(inputs(shared_data)), "--out_dir", out, *OPTIONS]
    job = cli(*args, start_new_session=True)
    deadline = time.time() + 120
    # Kill once three parts are committed and the next one is being written.
    while len(list((out / "parts").glob("part-*.json"))) < 3 or not list((out / ".tmp").glob("part-*")):
        assert job.poll() is None, "the job finished before it could be killed"
        assert time.time() < deadline
        time.sleep(0.005)
    os.killpg(job.pid, signal.SIGKILL)
    job.communicate()
    assert job.returncode == -signal.SIGKILL
    total = len(read_prep(out)["settings"]["parts"])
    committed = len(list((out / "parts").glob("part-*.json")))
    assert list((out / ".tmp").glob("part-*")), f"the kill should land inside a part ({committed} of {total} done)"
    with pytest.raises(ValueError, match="not committed"):
        data_prep.merge(out)

    rc, stdout, err = run_cli(*args, "--workers", 2)
    assert rc == 0, err
    assert f'"parts_already_committed": {committed}' in stdout
    info = data_prep.read_dataset_info(out)  # the rerun, a lone job, merged
    assert committed < total == info["num_parts"]
    assert info["splits"] == data_prep.read_dataset_info(reference)["splits"]
    assert not list((out / ".tmp").glob("part-*"))
    assert same_documents(out, reference)
    assert shard_hashes(out) == shard_hashes(reference)


def test_cli_errors_are_one_line_with_no_output(shared_data, tmp_path):
    out = tmp_path / "out"
    text = shared_data / "tinyshakespeare/input.txt"
    gz = tmp_path / "docs.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"text": "a document"}\n'))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "prep.json").write_text("{")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = {  # arguments -> the one line on stderr
        ("text", "--input", tmp_path / "nothing.txt", "--out_dir", out):
            f"input '{tmp_path / 'nothing.txt'}' does not exist",
        ("text", "--input", text, text, "--out_dir", out): f"unexpected argument '{text}'",
        ("text", "--input", gz, "--out_dir", out): f"input {gz} is gzip-compressed; decompress it first",
        ("text", "--input", text, "--out_dir", out, "--seq_len", "abc"): "--seq_len must be an integer, got 'abc'",
        ("text", "--input", text, "--out_dir", out, "--part_mb", "abc"): "--part_mb must be a number, got 'abc'",
        ("text", "--input", text, "--out_dir", out, "--tokenizer", "/nope.tiktoken"):
            "tokenizer '/nope.tiktoken' is neither 'gpt2' nor an existing .tiktoken file",
        ("text", "--input", text, "--out_dir", a_file): f"--out_dir {a_file} is a file; pass a folder path",
        ("merge", "--out_dir", broken): f"{broken / 'prep.json'} is corrupt (not valid JSON",
        ("inspect", broken, "--samples", "abc"): "--samples must be an integer, got 'abc'",
        ("openwebtext", "--out_dir", out, "--seq_len", "abc"): "--seq_len must be an integer, got 'abc'",
        (): "no command given; usage: python -m data_prep {text,openwebtext,merge,inspect}",
    }
    # Offline (the HF endpoint refuses connections): one line at once, not 24 s of retry warnings.
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith("HF_")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
    started = time.time()
    offline = cli("openwebtext", "--out_dir", out, env=env)
    jobs = {args: cli(*args) for args in cases}  # all at once: each takes a fraction of a second
    _, err = offline.communicate(timeout=120)
    assert offline.returncode == 2 and time.time() - started < 20, err  # retrying takes 23 s of sleeps alone
    assert err.strip().splitlines() == [
        "data_prep: error: cannot load the Hugging Face dataset 'Skylion007/openwebtext' (ConnectionError: "
        "Couldn't reach 'Skylion007/openwebtext' on the Hub (OfflineModeIsEnabled)); 127.0.0.1 is unreachable "
        "and the HF cache does not hold it; without internet pass --input with local copies (parquet/arrow/jsonl "
        "files or folders)"]
    for args, expected in cases.items():
        _, err = jobs[args].communicate(timeout=120)
        assert jobs[args].returncode == 2, (args, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("data_prep: ") and expected in lines[0], (args, err)
    assert not out.exists() and os.listdir(broken) == ["prep.json"] and a_file.read_text() == "x"


def test_sigterm_stops_the_job_and_its_workers(shared_data, tmp_path):
    out = tmp_path / "out"
    job = cli("text", "--input", ",".join(inputs(shared_data)), "--out_dir", out, *OPTIONS, "--workers", 2)
    deadline = time.time() + 120
    while len(list((out / "parts").glob("part-*.json"))) < 2:
        assert job.poll() is None and time.time() < deadline
        time.sleep(0.005)
    workers = subprocess.run(["pgrep", "-P", str(job.pid)], capture_output=True, text=True).stdout.split()
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=60)
    assert job.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines() == ["data_prep: stopped by SIGTERM; rerun the same command to continue"]
    time.sleep(0.5)
    assert workers and not [w for w in workers if Path(f"/proc/{w}").exists()], "worker processes outlived the job"


def test_too_many_unusable_lines_fail_without_publishing_and_a_rerun_accepting_them_reuses_the_parts(tmp_path):
    lines = [json.dumps({"text": f"document number {i}."}) for i in range(40)]
    lines += [json.dumps({"body": "under another key"})] * 3 + ["{not json", json.dumps({"text": ""})]
    src = tmp_path / "docs.jsonl"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    args = ("text", "--input", src, "--out_dir", out, "--val_fraction", "0", "--progress", "False")
    rc, _, err = run_cli(*args)  # 4 of 45 lines unusable (8.9%), over the default 0.05
    assert rc == 2 and err.strip().splitlines() == [
        "data_prep: error: 4 of 45 input records (8.9%) are unusable (missing_text 3, invalid_json 1), over "
        "--max_skipped 0.05; check the input, pass --text_field NAME if the text is under another key, or "
        "--max_skipped 1 to accept them (committed parts are kept: the rerun only merges)"], err
    assert not (out / "dataset.json").exists() and not (out / "train/index.json").exists()
    assert (out / "parts/part-00000.json").is_file()  # committed: the rerun reuses it
    with pytest.raises(ValueError, match="no dataset.json"):
        data_prep.read_dataset_info(out)  # what training reads

    rc, stdout, err = run_cli(*args, "--max_skipped", "0.1")
    assert rc == 0, err
    notes = [line for line in err.splitlines() if line.startswith("data_prep")]  # not exit noise (issue 29.2)
    assert notes == ["data_prep: note: skipped 5 of 45 input records (empty 1, missing_text 3, invalid_json 1)"]
    summary = json.loads(stdout)
    assert summary["parts_already_committed"] == summary["parts_total"] == 1 and summary["parts_built"] == []
    assert data_prep.read_dataset_info(out)["splits"]["train"]["documents"] == 40
