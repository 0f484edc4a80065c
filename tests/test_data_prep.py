"""data_prep on real text, in-process: exactness of the samples, the MDS contract with the
training loader, formats, bad input, and restart/settings rules."""

import json
import os
import re
import shutil

import numpy as np
import pytest

import data_prep
from backpack_dist.tokenizer import load_tokenizer, tokenizer_fingerprint
from data_prep.merge import check_skipped
from data_prep.packing import SamplePacker, is_validation, split_long_text

SEED = 2357
WHITESPACE = " \t\n\r\x0b\x0c"


def reference_paragraphs(text: str) -> list[str]:
    """Blank-line separated documents, written independently of data_prep.sources."""
    docs, lines = [], []
    for line in text.split("\n") + [""]:
        if line.strip(WHITESPACE):
            lines.append(line)
        elif lines:
            docs.append("\n".join(lines))
            lines = []
    return docs


def reference_jsonl(path) -> list[str]:
    with open(path) as f:
        return [d for d in (json.loads(line)["text"] for line in f if line.strip()) if d.strip()]


def decoded(out, split):
    return list(data_prep.iter_documents(out, split))


def assert_exact(out, reference: list[str], val_fraction: float, seq_len: int):
    """Every document comes back exactly, in its split, in order; token ids are encode_ordinary's."""
    info = data_prep.read_dataset_info(out)
    val = [d for d in reference if is_validation(d, SEED, val_fraction)]
    train = [d for d in reference if not is_validation(d, SEED, val_fraction)]
    assert val and train, "the test needs documents in both splits"
    enc = load_tokenizer("gpt2")
    for split, expected in (("train", train), ("val", val)):
        got_ids = list(data_prep.iter_document_tokens(out, split))
        assert [enc.decode(ids.tolist()) for ids in got_ids] == expected
        for ids, doc in zip(got_ids[:200], expected[:200], strict=True):
            assert ids.tolist() == enc.encode_ordinary(doc)
        counts = info["splits"][split]
        assert counts["documents"] == len(expected)
        assert counts["tokens"] == sum(len(ids) + 1 for ids in got_ids)
    check_sample_shapes(out, seq_len)


def check_sample_shapes(out, seq_len):
    """seq_len + 1 tokens per sample, except a shorter (>= 2) last sample of each part."""
    from streaming import StreamingDataset

    info = data_prep.read_dataset_info(out)
    for split in ("train", "val"):
        ds = StreamingDataset(local=str(out / split), shuffle=False, batch_size=1)
        assert len(ds) == info["splits"][split]["samples"] == sum(info["splits"][split]["part_samples"])
        i = 0
        for n in info["splits"][split]["part_samples"]:
            for k in range(n):
                tokens = ds[i]["tokens"]
                assert tokens.dtype == np.uint16
                if k < n - 1:
                    assert len(tokens) == seq_len + 1
                else:
                    assert 2 <= len(tokens) <= seq_len + 1
                i += 1


@pytest.mark.parametrize(
    "name, path",
    [("tinyshakespeare", "tinyshakespeare/input.txt"), ("wikitext2", "wikitext2/wiki.test.raw")],
)
def test_plain_text_round_trips_exactly(shared_data, tmp_path, name, path):
    src = shared_data / path
    out = tmp_path / name
    # Small parts, so byte ranges are cut mid-file and must snap to the same paragraph starts.
    info = data_prep.prepare_and_merge([src], out, seq_len=128, val_fraction=0.05, part_mb=0.25)
    assert info["num_parts"] >= 4
    assert_exact(out, reference_paragraphs(src.read_text()), 0.05, 128)


def test_jsonl_parquet_and_arrow_give_the_same_documents(shared_data, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = shared_data / "lambada_openai/lambada_test.jsonl"
    reference = reference_jsonl(src)
    out = tmp_path / "jsonl"
    data_prep.prepare_and_merge([src], out, seq_len=256, val_fraction=0.05, part_mb=0.3)
    assert_exact(out, reference, 0.05, 256)

    table = pa.table({"text": reference, "id": list(range(len(reference)))})
    pq.write_table(table, tmp_path / "lambada.parquet", row_group_size=700)
    with pa.ipc.new_stream(str(tmp_path / "lambada.arrow"), table.schema) as w:  # HF's cache layout
        w.write_table(table, max_chunksize=1000)
    for name in ("lambada.parquet", "lambada.arrow"):
        other = tmp_path / name.replace(".", "_")
        info = data_prep.prepare_and_merge([tmp_path / name], other, seq_len=256, val_fraction=0.05, part_mb=0.3)
        assert info["num_parts"] >= 2
        for split in ("train", "val"):
            assert decoded(other, split) == decoded(out, split)


def test_samples_overlap_by_one_token_and_every_target_once():
    written = []
    packer = SamplePacker(4, written.append)
    docs = [np.arange(n, dtype=np.uint16) + 100 * n for n in (3, 5, 1, 7)]
    for d in docs:
        packer.add(d)
    packer.finish()
    stream = np.concatenate(docs)
    assert [len(s) for s in written] == [5, 5, 5, 4]  # 16 tokens = 15 targets: 4 + 4 + 4 + 3
    targets = np.concatenate([s[1:] for s in written])
    assert targets.tolist() == stream[1:].tolist()
    # A stream that ends exactly on a sample boundary leaves one token: already a target, not a sample.
    written.clear()
    packer = SamplePacker(4, written.append)
    packer.add(np.arange(9, dtype=np.uint16))
    packer.finish()
    assert [s.tolist() for s in written] == [[0, 1, 2, 3, 4], [4, 5, 6, 7, 8]]


def test_sample_bytes_equal_the_librarys_ndarray_encoding():
    from streaming.base.format.mds.encodings import mds_decode, mds_encode

    from data_prep.parts import TokenSampleEncoder

    encode = TokenSampleEncoder(seq_len=300)
    rng = np.random.default_rng(0)
    for n in (2, 255, 256, 300, 301):
        tokens = rng.integers(0, 50257, n).astype(np.uint16)
        assert encode(tokens) == mds_encode("ndarray:uint16", tokens)
        assert (mds_decode("ndarray:uint16", encode(tokens)) == tokens).all()


def test_tokens_are_encode_ordinary_even_for_special_token_text(shared_data):
    from data_prep.packing import DocumentTokenizer

    enc = load_tokenizer("gpt2")
    tok = DocumentTokenizer("gpt2", max_doc_chars=50)
    text = "An <|endoftext|> inside text stays text. Ünïcödé ✓ 日本語\n\n  spaces   "
    ids, sliced = tok(text)
    assert not sliced or len(text) > 50
    assert enc.decode(ids[:-1].tolist()) == text and ids[-1] == enc.eot_token
    short = DocumentTokenizer("gpt2", max_doc_chars=10_000)
    ids, sliced = short(text)
    assert not sliced and ids[:-1].tolist() == enc.encode_ordinary(text)
    long_text = (shared_data / "tinyshakespeare/input.txt").read_text()[:50_000]
    assert "".join(split_long_text(long_text, 3000)) == long_text
    assert max(map(len, split_long_text(long_text, 3000))) <= 3000


def test_val_split_depends_only_on_document_and_seed():
    docs = [f"document number {i}" for i in range(20000)]
    picked = [d for d in docs if is_validation(d, SEED, 0.05)]
    assert 800 < len(picked) < 1200
    assert picked == [d for d in docs if is_validation(d, SEED, 0.05)]
    assert picked != [d for d in docs if is_validation(d, SEED + 1, 0.05)]
    assert not any(is_validation(d, SEED, 0.0) for d in docs)


def test_sharded_jobs_in_process_match_one_job(shared_data, tmp_path):
    src = [shared_data / "lambada_openai/lambada_test.jsonl", shared_data / "tinyshakespeare/input.txt"]
    one = tmp_path / "one"
    many = tmp_path / "many"
    data_prep.prepare_and_merge(src, one, seq_len=256, val_fraction=0.02, part_mb=0.4)
    for i in range(3):
        data_prep.prepare_text(src, many, seq_len=256, val_fraction=0.02, part_mb=0.4, num_shards=3, shard_index=i)
        if i < 2:
            with pytest.raises(ValueError, match="not committed"):
                data_prep.merge(many)
    with pytest.raises(ValueError, match="not a merged data-prep output"):  # an array's jobs leave it to merge
        data_prep.read_dataset_info(many)
    info_many = data_prep.merge(many)
    info_one = data_prep.read_dataset_info(one)
    assert info_many["splits"] == info_one["splits"]
    for split in ("train", "val"):
        assert decoded(many, split) == decoded(one, split)


def test_bad_input_is_skipped_or_repaired_and_counted(shared_data, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shakespeare = (shared_data / "tinyshakespeare/input.txt").read_text()
    enormous = shakespeare * 3  # 3.3M characters, one document
    lines = [
        json.dumps({"text": "A normal document."}),
        "{not json",
        json.dumps({"title": "no text field"}),
        json.dumps({"text": None}),
        json.dumps(["not", "an", "object"]),
        json.dumps({"text": "   \n\t  "}),
        json.dumps({"text": "lone surrogate \ud800 here"}),
        "",
        json.dumps({"text": enormous}),
    ]
    (src / "a.jsonl").write_text("\n".join(lines) + "\n")
    (src / "b.txt").write_bytes(b"good paragraph\n\nbad bytes \xff\xfe here\n \n\n  \nlast one")
    out = tmp_path / "out"
    # 4 of 11 records are unusable, far over the default --max_skipped: accept them to see each one counted
    info = data_prep.prepare_and_merge([src], out, seq_len=512, val_fraction=0.0, max_doc_chars=1_000_000,
                                       max_skipped=1)
    assert info["skipped"] == {"empty": 1, "missing_text": 3, "invalid_json": 1}
    assert info["repaired"] == {"invalid_utf8_repaired": 2, "long_doc_sliced": 1}
    docs = decoded(out, "train")
    assert docs == [
        "A normal document.",
        "lone surrogate \ufffd here",
        enormous,
        "good paragraph",
        "bad bytes \ufffd\ufffd here",
        "last one",
    ]
    manifest = json.loads((out / "parts/part-00000.json").read_text())
    assert manifest["skipped"]["missing_text"] == 3 and manifest["tokenizer_fingerprint"] == tokenizer_fingerprint()


def test_the_share_of_unusable_records_is_limited_and_empty_ones_do_not_count():
    counts = {"empty": 0, "missing_text": 0, "invalid_json": 0}
    assert check_skipped(counts, 100, 0.05) is None  # nothing skipped: no note
    # 5 unusable of 100 records is exactly the share: allowed, with a note naming each reason
    note = check_skipped({**counts, "missing_text": 3, "invalid_json": 2}, 95, 0.05)
    assert note == "data_prep: note: skipped 5 of 100 input records (missing_text 3, invalid_json 2)"
    with pytest.raises(ValueError) as over:  # 6 of 100
        check_skipped({**counts, "missing_text": 6}, 94, 0.05)
    message = str(over.value)
    assert message.startswith("6 of 100 input records (6.0%) are unusable (missing_text 6), over --max_skipped 0.05")
    assert "--text_field NAME" in message and "--max_skipped 1" in message
    # empty documents are normal: all-empty input is noted, never refused
    note = check_skipped({**counts, "empty": 90}, 10, 0.0)
    assert note == "data_prep: note: skipped 90 of 100 input records (empty 90)"
    assert check_skipped({**counts, "invalid_json": 100}, 0, 1.0).startswith("data_prep: note: skipped 100 of 100")
    with pytest.raises(ValueError, match=r"--max_skipped must be in \[0.0, 1.0\], got 1.5"):
        data_prep.JobOptions(out_dir="x", max_skipped=1.5)


def test_unreadable_input_is_a_clear_error_with_no_output(tmp_path):
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"this is not parquet at all")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="cannot read parquet file .*broken.parquet"):
        data_prep.prepare_text([bad], out)
    assert not out.exists()
    with pytest.raises(ValueError, match="does not exist"):
        data_prep.prepare_text([tmp_path / "missing.txt"], out)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("someone else's folder")
    good = tmp_path / "good.txt"
    good.write_text("one document")
    with pytest.raises(ValueError, match="not empty and not a data_prep output"):
        data_prep.prepare_text([good], foreign)
    assert sorted(os.listdir(foreign)) == ["notes.txt"]
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.txt"
        locked.write_text("x")
        locked.chmod(0)
        with pytest.raises(ValueError, match="cannot read input"):
            data_prep.prepare_text([locked], out)
    assert not out.exists()


def test_rerun_skips_committed_parts_redoes_partial_ones_and_refuses_other_settings(shared_data, tmp_path):
    src = [shared_data / "tinyshakespeare/input.txt"]
    out = tmp_path / "out"
    first = data_prep.prepare_and_merge(src, out, seq_len=128, val_fraction=0.05, part_mb=0.3)
    again = data_prep.prepare_text(src, out, seq_len=128, val_fraction=0.05, part_mb=0.3)
    assert again["parts_built"] == [] and again["parts_already_committed"] == first["num_parts"]
    assert (out / "dataset.json").exists()

    # A part whose manifest never got written (killed between moving its folders and committing).
    (out / "parts/part-00001.json").unlink()
    (out / ".tmp/part-00001/train").mkdir(parents=True)
    with pytest.raises(ValueError, match="part-00001"):
        data_prep.merge(out)
    redo = data_prep.prepare_text(src, out, seq_len=128, val_fraction=0.05, part_mb=0.3)
    assert redo["parts_built"] == ["part-00001"] and redo["merged"] == str(out / "dataset.json")
    assert data_prep.read_dataset_info(out)["splits"] == first["splits"]
    assert not (out / ".tmp/part-00001").exists()

    with pytest.raises(ValueError, match=r"different settings \(changed: .*seq_len"):
        data_prep.prepare_text(src, out, seq_len=64, val_fraction=0.05, part_mb=0.3)
    data_prep.prepare_text(src, out, seq_len=64, val_fraction=0.05, part_mb=0.3, overwrite=True)
    assert data_prep.read_dataset_info(out)["seq_len"] == 64
    check_sample_shapes(out, 64)


def test_tokenizer_file_and_dataset_info(shared_data, tmp_path):
    tok = shared_data / "gpt2_tokenizer/r50k_base.tiktoken"
    out = tmp_path / "out"
    info = data_prep.prepare_and_merge([shared_data / "tinyshakespeare/input.txt"], out, seq_len=64,
                                       tokenizer=str(tok), val_fraction=0.01)
    read = data_prep.read_dataset_info(out)
    assert read == info
    assert read["tokenizer"] == str(tok.resolve()) and os.path.isabs(read["tokenizer"])
    assert read["tokenizer_fingerprint"] == tokenizer_fingerprint("gpt2")  # same vocabulary as tiktoken's gpt2
    assert read["vocab_size"] == 50257 and read["eos_token_id"] == 50256 and read["seq_len"] == 64
    with pytest.raises(ValueError, match="not a merged data-prep output"):
        data_prep.read_dataset_info(tmp_path)
    shutil.rmtree(out / "val")
    with pytest.raises(ValueError, match="index.json is missing"):
        data_prep.read_dataset_info(out)


def test_inspect_prints_counts_and_samples(shared_data, tmp_path):
    out = tmp_path / "out"
    # job 0 of an array of 2 (it owns the one part): unmerged until `merge`
    data_prep.prepare_text([shared_data / "tinyshakespeare/input.txt"], out, seq_len=64, val_fraction=0.01,
                           num_shards=2)
    assert "not merged yet; 1 of 1 parts" in data_prep.inspect(out)
    data_prep.merge(out)
    text = data_prep.inspect(out, samples=1)
    assert "train:" in text and "--- train sample 0 (65 tokens) ---\nFirst Citizen:" in text


def test_compression_choice_keeps_the_tokens_and_bad_names_are_refused(shared_data, tmp_path):
    src = [shared_data / "tinyshakespeare/input.txt"]
    outs = {}
    for codec in ("zstd:1", "none", "zstd:3"):
        outs[codec] = tmp_path / codec.replace(":", "_")
        data_prep.prepare_and_merge(src, outs[codec], seq_len=64, val_fraction=0.01, compression=codec)
    shards = {codec: sorted(p.name for p in (out / "train").glob("part-*/shard.*")) for codec, out in outs.items()}
    assert shards["none"] == ["shard.00000.mds"] and shards["zstd:1"] == ["shard.00000.mds.zstd"]
    reference = [ids.tolist() for ids in data_prep.iter_document_tokens(outs["none"], "train")]
    for codec in ("zstd:1", "zstd:3"):
        assert [ids.tolist() for ids in data_prep.iter_document_tokens(outs[codec], "train")] == reference
    with pytest.raises(ValueError, match="--compression 'zstd:99' is not one of streaming's codecs"):
        data_prep.prepare_text(src, tmp_path / "bad", compression="zstd:99")
    assert not (tmp_path / "bad").exists()


def test_compressed_binary_and_documentless_input_is_refused_before_writing(tmp_path):
    import bz2
    import gzip
    import lzma
    import zipfile

    src = tmp_path / "src"
    src.mkdir()
    jsonl = "".join(json.dumps({"text": f"document {i}", "id": i}) + "\n" for i in range(30)).encode()
    (src / "docs.jsonl.gz").write_bytes(gzip.compress(jsonl))
    (src / "docs.jsonl.xz").write_bytes(lzma.compress(jsonl))
    (src / "docs.jsonl.bz2").write_bytes(bz2.compress(jsonl))
    (src / "docs.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd" + jsonl)  # zstd's magic number
    with zipfile.ZipFile(src / "docs.zip", "w") as z:
        z.writestr("docs.jsonl", jsonl)
    (src / "blob.txt").write_bytes(b"text at first" + bytes(range(256)))
    (src / "utf16.txt").write_text("UTF-16 text", encoding="utf-16")
    (src / "empty.txt").write_bytes(b"")
    (src / "blank.jsonl").write_text("\n  \n\n")
    (src / "array.json").write_text(json.dumps([{"text": "a"}, {"text": "b"}], indent=2))
    (src / "docs.jsonl").write_bytes(jsonl)
    (src / "empty_texts.jsonl").write_text(json.dumps({"text": "  "}) + "\n" + "{broken\n" * 3)
    cases = {
        "docs.jsonl.gz": r"is gzip-compressed; decompress it first \(`gunzip -k",
        "docs.jsonl.xz": "is xz-compressed; decompress it first",
        "docs.jsonl.bz2": "is bzip2-compressed; decompress it first",
        "docs.jsonl.zst": "is zstd-compressed; decompress it first",
        "docs.zip": "is zip-compressed; decompress it first",
        "blob.txt": "is binary .NUL bytes",
        "utf16.txt": "is binary .NUL bytes",
        "empty.txt": r"no documents in the input: .*empty.txt \(no text at all\)",
        "blank.jsonl": r"no documents in the input: .*blank.jsonl",
        "array.json": r"array.json does not hold one JSON object per line .* `jq -c",
        "empty_texts.jsonl": r"no documents in the input: .*\(empty 1, invalid_json 3\)",
    }
    out = tmp_path / "out"
    for name, message in cases.items():
        with pytest.raises(ValueError, match=message):
            data_prep.prepare_text([src / name], out)
        assert not out.exists(), name
    with pytest.raises(ValueError, match=r"has no field 'content' in its first 20 objects \(keys: 'id', 'text'\); "
                                         "pass --text_field"):
        data_prep.prepare_text([src / "docs.jsonl"], out, text_field="content")
    with pytest.raises(ValueError, match=r"no documents in the input: 2 files"):
        data_prep.prepare_text([src / "empty.txt", src / "blank.jsonl"], out)
    assert not out.exists()

    # The search for a first document reads the input in small windows until it finds one: here
    # past 1.5 MB of empty documents. The job's summary counts what it skipped.
    late = tmp_path / "late.jsonl"
    late.write_text((json.dumps({"text": " " * 100}) + "\n") * 15_000
                    + json.dumps({"text": "the only document"}) + "\n")
    # Latin-1 bytes in every line of a jsonl file are repaired, not taken for lines without objects.
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(b'{"text": "caf\xe9"}\n' * 3)
    summary = data_prep.prepare_text([late, latin1, src / "empty.txt"], out, part_mb=64)
    assert summary["documents"] == 4 and summary["skipped"] == {"empty": 15_000, "missing_text": 0, "invalid_json": 0}
    assert summary["repaired"] == {"invalid_utf8_repaired": 3, "long_doc_sliced": 0}


def test_a_file_broken_mid_read_is_replaced_and_the_rerun_keeps_committed_parts(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    a, b, c = tmp_path / "a.txt", tmp_path / "b.parquet", tmp_path / "c.txt"
    a.write_text("\n\n".join(f"paragraph {i} of file a, " * 5 for i in range(40)))
    c.write_text("\n\n".join(f"paragraph {i} of file c, " * 5 for i in range(40)))
    pq.write_table(pa.table({"text": [f"row {i} of the parquet file" for i in range(100)]}), b, compression="none")
    good = b.read_bytes()
    b.write_bytes(good[:4] + b"\xff" * 40 + good[44:])  # the first page header: the footer still reads
    inputs, kw = [a, b, c], dict(seq_len=32, val_fraction=0.2, part_mb=2500 / (1 << 20))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"cannot read input .*b.parquet: .*; fix or replace the file and rerun "
                                         r"\(committed parts are kept\)"):
        data_prep.prepare_text(inputs, out, **kw)
    parts = read_parts(out)
    assert len(parts) == 5 and sorted(os.listdir(out / "parts")) == ["part-00000.json", "part-00001.json"]
    assert not list((out / ".tmp").glob("part-*")), "the failed part's temporary folder stays behind"

    b.write_bytes(good)  # replaced: other size/mtime, and no committed part reads it
    rerun = data_prep.prepare_text(inputs, out, **kw)
    assert rerun["parts_already_committed"] == 2 and rerun["parts_built"] == ["part-00002", "part-00003", "part-00004"]

    os.utime(a, ns=(1, 1))  # a file that committed parts read changed: those parts need --overwrite
    with pytest.raises(ValueError, match=r"a.txt changed \(size or mtime\) since committed parts read it "
                                         r"\(part-00000, part-00001\); pass --overwrite"):
        data_prep.prepare_text(inputs, out, **kw)
    redo = data_prep.prepare_text(inputs, out, overwrite=True, **kw)
    assert redo["parts_already_committed"] == 3 and redo["parts_built"] == ["part-00000", "part-00001"]
    info = data_prep.merge(out)
    fresh = data_prep.prepare_and_merge(inputs, tmp_path / "fresh", **kw)
    assert info["splits"] == fresh["splits"]
    for split in ("train", "val"):
        assert decoded(out, split) == decoded(tmp_path / "fresh", split)


def read_parts(out):
    return json.loads((out / "prep.json").read_text())["settings"]["parts"]


def test_new_settings_remove_the_stale_merged_view_and_parts(shared_data, tmp_path):
    src = [shared_data / "tinyshakespeare/input.txt"]
    out = tmp_path / "out"
    assert data_prep.prepare_and_merge(src, out, seq_len=64, val_fraction=0.01, part_mb=0.3)["num_parts"] == 4
    # A job that owns no part, with new settings and fewer parts: nothing stale may stay readable.
    job = data_prep.prepare_text(src, out, seq_len=32, val_fraction=0.01, part_mb=0.6, num_shards=4, shard_index=3,
                                 overwrite=True)
    assert job["parts_total"] == 2 and job["parts_of_this_job"] == 0
    assert not (out / "dataset.json").exists() and not (out / "train/index.json").exists()
    with pytest.raises(ValueError, match="not a merged data-prep output"):
        data_prep.read_dataset_info(out)
    assert sorted(os.listdir(out / "train")) == ["part-00000", "part-00001"]  # parts 2 and 3 are gone
    assert "0 of 2 parts are committed" in data_prep.inspect(out)  # the old manifests do not count
    data_prep.prepare_text(src, out, seq_len=32, val_fraction=0.01, part_mb=0.6, num_shards=4, shard_index=0)
    assert "1 of 2 parts are committed" in data_prep.inspect(out)

    # A corrupt prep.json: a clear error everywhere; --overwrite rewrites it and keeps the parts.
    (out / "prep.json").write_text('{"settings_id": ')
    for call in (lambda: data_prep.prepare_text(src, out, seq_len=32, val_fraction=0.01, part_mb=0.6),
                 lambda: data_prep.merge(out), lambda: data_prep.inspect(out)):
        with pytest.raises(ValueError, match=r"prep.json is corrupt \(not valid JSON: .*\); rerun the prep job with "
                                             "--overwrite"):
            call()
    again = data_prep.prepare_text(src, out, seq_len=32, val_fraction=0.01, part_mb=0.6, overwrite=True)
    assert again["parts_already_committed"] == 1 and again["parts_built"] == ["part-00001"]
    assert data_prep.merge(out)["seq_len"] == 32


def test_bad_option_values_are_named_errors(shared_data, tmp_path):
    src = [shared_data / "tinyshakespeare/input.txt"]
    out = tmp_path / "out"
    some_file = tmp_path / "notes.txt"
    some_file.write_text("not a tokenizer\n")
    from backpack_dist import cli
    from data_prep.__main__ import TextOptions

    # Values as typed on the command line are parsed by the options' types...
    for args, message in [
        (["--seq_len", "abc"], "--seq_len must be an integer, got 'abc'"),
        (["--seq_len"], "--seq_len needs a value"),  # a bare `--seq_len`
        (["--part_mb", "abc"], "--part_mb must be a number, got 'abc'"),
        (["--workers", "two"], "--workers must be an integer, got 'two'"),
        (["--one_doc_per_file", "b.txt"], "--one_doc_per_file is a switch"),
        (["--seq_len", "0"], "--seq_len must be >= 1, got 0"),
    ]:
        with pytest.raises(cli.UsageError, match=re.escape(message)):
            cli.parse_options(TextOptions, [str(src[0]), "--out_dir", str(out), *args])
    # ...and checked once, for the command line and the Python API alike.
    cases = [
        (dict(val_fraction=1.5), r"--val_fraction must be in \[0, 1\)"),
        (dict(workers=0), r"--workers must be >= 1, got 0"),
        (dict(tokenizer="/nope.tiktoken"), r"tokenizer '/nope.tiktoken' is neither 'gpt2' nor an existing"),
        (dict(tokenizer=str(some_file)), r"is not a valid .tiktoken BPE file: .*; pass --tokenizer gpt2 or the path"),
        (dict(sequence_length=3), r"unknown option: .*sequence_length"),
    ]
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            data_prep.prepare_text(src, out, **options)
    for bad_out, message in ((some_file, r"--out_dir .*notes.txt is a file; pass a folder path"),
                             (some_file / "sub", r"--out_dir .*sub is under .*notes.txt, which is a file")):
        with pytest.raises(ValueError, match=message):
            data_prep.prepare_text(src, bad_out)
    assert not out.exists()
    from data_prep.__main__ import InspectOptions

    with pytest.raises(cli.UsageError, match=r"--samples must be an integer, got 'abc'"):
        cli.parse_options(InspectOptions, [str(out), "--samples", "abc"])
    with pytest.raises(ValueError, match=r"--samples and --chars must be >= 0, got -1 and 300"):
        data_prep.inspect(out, samples=-1)


def test_manifests_from_before_part_keys_count_while_the_settings_are_unchanged(shared_data, tmp_path):
    src = [shared_data / "tinyshakespeare/input.txt"]
    out = tmp_path / "out"
    data_prep.prepare_text(src, out, seq_len=64, val_fraction=0.01, part_mb=0.6)
    for path in (out / "parts").glob("part-*.json"):  # as an earlier version wrote them
        manifest = json.loads(path.read_text())
        del manifest["part_key"]
        path.write_text(json.dumps(manifest))
    assert data_prep.prepare_text(src, out, seq_len=64, val_fraction=0.01, part_mb=0.6)["parts_built"] == []
    redo = data_prep.prepare_text(src, out, seq_len=32, val_fraction=0.01, part_mb=0.6, overwrite=True)
    assert redo["parts_built"] == ["part-00000", "part-00001"]
