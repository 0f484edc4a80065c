"""The trainer's micro-batch reader gives exactly what mosaicml-streaming's own per-sample path
gives through a DataLoader: the same sample ids in the same order, the same tokens, on resume and
in the next epoch, with loader workers, from compressed shards and from shards it must download."""

import os

import numpy as np
import pytest
import torch
from streaming import MDSWriter, StreamingDataset

from backpack_dist import mds_reader, sample_ids
from backpack_dist.data import TokenStream, pack_tokens
from backpack_dist.micro_batches import MicroBatchDataset, as_is
from data_prep.parts import COLUMNS, TokenSampleEncoder

SEQ_LEN = 32
# streaming's resume state: 40 samples of epoch 0 taken
RESUME_AT_40 = {"epoch": 0, "sample_in_epoch": 40, "num_canonical_nodes": 4, "shuffle_seed": 7,
                "initial_physical_nodes": 1}


@pytest.fixture(autouse=True)
def one_process(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")  # streaming reads it; it must not leak into later runs


def write_shards(out, compression=None, samples=300):
    """Mostly full-length samples written as data prep writes them, some short ones (a part's end)."""
    rng = np.random.default_rng(0)
    encode = TokenSampleEncoder(SEQ_LEN)
    with MDSWriter(out=str(out), columns=COLUMNS, compression=compression, size_limit=4096) as writer:
        for i in range(samples):
            n = SEQ_LEN + 1 if i % 7 else int(rng.integers(1, SEQ_LEN + 1))
            writer.write({"tokens": encode(rng.integers(0, 50257, size=n).astype(np.uint16))})
    return out


class WithIds(StreamingDataset):
    def get_item(self, sample_id, retry=7):
        return {**super().get_item(sample_id, retry), "id": sample_id}


def streamings_batches(local, *, batch, workers, state=None, epochs=1, **kwargs):
    """(ids, packed tokens) per micro batch from StreamingDataset's per-sample path: the oracle."""
    dataset = WithIds(local=str(local), batch_size=batch, **kwargs)
    if state:
        dataset.load_state_dict(state)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, num_workers=workers, drop_last=True,
        collate_fn=lambda s: ([x["id"] for x in s], pack_tokens([x["tokens"] for x in s], SEQ_LEN)))
    return [b for _ in range(epochs) for b in loader]


def our_batches(local, *, batch, workers, state=None, epochs=1, **kwargs):
    dataset = MicroBatchDataset(local=str(local), batch_size=batch, seq_len=SEQ_LEN, with_ids=True, **kwargs)
    if state:
        dataset.load_state_dict(state)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers, collate_fn=as_is)
    return [(ids.tolist(), tokens) for _ in range(epochs) for tokens, ids in loader]


def assert_same(ours, theirs):
    assert len(ours) == len(theirs) > 0
    for k, ((our_ids, our_tokens), (ids, tokens)) in enumerate(zip(ours, theirs, strict=True)):
        assert our_ids == ids, f"batch {k}"
        assert np.array_equal(our_tokens, tokens), f"batch {k}"


@pytest.mark.parametrize("compression", [None, "zstd"], ids=["raw", "zstd"])
@pytest.mark.parametrize("batch,workers", [(8, 0), (5, 2)])
def test_same_batches_as_streaming_over_two_epochs(tmp_path, compression, batch, workers):
    # Each reader gets its own copy: streaming decompresses a zstd shard beside its zip when first read.
    mine, reference = write_shards(tmp_path / "ours", compression), write_shards(tmp_path / "theirs", compression)
    kwargs = dict(batch=batch, workers=workers, shuffle=True, shuffle_seed=7, num_canonical_nodes=4, epochs=2)
    assert not list(mine.glob("shard.*.mds")) or compression is None
    ours = our_batches(mine, **kwargs)
    assert_same(ours, streamings_batches(reference, **kwargs))
    if compression:  # read through streaming's get_item, which decompressed the shards
        assert len(list(mine.glob("shard.*.mds"))) == len(list(mine.glob("shard.*.mds.zstd"))) > 5
    assert any(np.any(t == -100) for _, t in ours)  # short samples were padded: the decoding path ran
    ids = [i for b, _ in ours[: len(ours) // 2] for i in b]
    assert len(set(ids)) == len(ids) and ours[0][0] != ours[len(ours) // 2][0]  # epoch 2 reshuffled


def test_same_batches_after_a_resume_mid_epoch(tmp_path):
    local = write_shards(tmp_path / "mds")
    kwargs = dict(batch=8, workers=1, shuffle=True, shuffle_seed=7, num_canonical_nodes=4)
    ours = our_batches(local, state=RESUME_AT_40, **kwargs)
    assert_same(ours, streamings_batches(local, state=RESUME_AT_40, **kwargs))
    whole = our_batches(local, **kwargs)
    assert ours[0][0] == whole[5][0]  # it resumed at sample 40: batch 5 of 8


@pytest.mark.parametrize("workers,state", [(1, None), (2, RESUME_AT_40)], ids=["1-worker", "2-workers-resumed"])
def test_shards_to_download_come_through_streamings_threads(tmp_path, workers, state):
    remote = write_shards(tmp_path / "remote", "zstd")
    kwargs = dict(batch=8, workers=workers, state=state, shuffle=True, shuffle_seed=7, num_canonical_nodes=4)
    theirs = streamings_batches(remote, **kwargs)
    ours = our_batches(tmp_path / "cache", remote=str(remote), **kwargs)
    assert_same(ours, theirs)
    assert list((tmp_path / "cache").glob("shard.*.mds"))  # it downloaded and decompressed shards


def test_a_shard_that_fails_to_download_stops_the_epoch_with_its_error(tmp_path):
    """streaming's own loop would end the epoch early without a word: the trainer would go on."""
    remote = write_shards(tmp_path / "remote", "zstd")
    missing = sorted(remote.glob("shard.*.mds.zstd"))[2]
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=missing.name):
        our_batches(tmp_path / "cache", remote=str(remote), batch=8, workers=0, shuffle=False)


def test_shards_evicted_under_a_cache_limit_are_unmapped(tmp_path):
    """A map would keep an evicted shard's disk space: the cache would outgrow its limit."""
    remote = write_shards(tmp_path / "remote", "zstd", samples=1200)
    kwargs = dict(batch=8, workers=0, shuffle=False)  # in this process, so its maps can be checked
    ours = our_batches(tmp_path / "cache", remote=str(remote), cache_limit=32_000, **kwargs)
    assert_same(ours, streamings_batches(remote, **kwargs))
    shards = len(list(remote.glob("shard.*.mds.zstd")))
    assert len(list((tmp_path / "cache").glob("shard.*.mds"))) < shards // 2  # streaming evicted
    ours_mapped = [p for p in mds_reader._mapped if p.startswith(str(tmp_path / "cache"))]
    # Streaming's threads may evict a shard after the last batch's check; without it nearly all would be gone.
    assert ours_mapped and sum(not os.path.exists(p) for p in ours_mapped) <= 2


def test_token_stream_logs_the_ids_it_trained_on_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv(sample_ids.ENV, "1")
    local = write_shards(tmp_path / "mds")
    kwargs = dict(remote=None, micro_batch=8, seq_len=SEQ_LEN, shuffle=True, seed=7, num_canonical_nodes=4,
                  num_workers=1, world_size=1)
    first = TokenStream(str(local), **kwargs)
    x, y = [next(first) for _ in range(3)][-1]
    assert x.shape == y.shape == (8, SEQ_LEN) and torch.equal(x[:, 1:], y[:, :-1].clamp(min=0))
    taken = first.take_sample_ids()
    state = first.state_dict()
    after = [first.take_sample_ids() for _ in [next(first), next(first)]]
    first.close()
    resumed = TokenStream(str(local), **kwargs)
    resumed.load_state_dict(state)
    again = [resumed.take_sample_ids() for _ in [next(resumed), next(resumed)]]
    resumed.close()
    assert state["sample_in_epoch"] == 24 and len(taken) == 24
    assert again == after and not set(taken) & {i for b in again for i in b}


def test_rows_equal_streamings_decoding_and_few_shards_stay_mapped(tmp_path, monkeypatch):
    local = write_shards(tmp_path / "mds")
    dataset = StreamingDataset(local=str(local), shuffle=False, batch_size=1)
    expected = [dataset[i]["tokens"] for i in range(len(dataset))]
    monkeypatch.setattr(mds_reader, "MAX_MAPPED_SHARDS", 2)
    order = np.array(list(range(len(dataset)))[::-1] + list(range(len(dataset))))  # every shard, twice
    assert len(dataset.shards) > 5
    rows = mds_reader.read_token_rows(dataset, order, SEQ_LEN + 1)
    assert all(np.array_equal(r, expected[i]) for r, i in zip(rows, order, strict=True))
    assert len(mds_reader._mapped) <= 2  # older maps closed: a long shuffled epoch keeps few descriptors
