"""The memory-mapped MDS reader returns what streaming's own reader returns, for every sample
of every shard (compressed ones included), while keeping only a few shards mapped."""

import pickle

import numpy as np
import pytest
from streaming import MDSWriter, StreamingDataset

from backpack_dist import mds_reader
from data_prep.parts import COLUMNS


@pytest.fixture(params=[None, "zstd"], ids=["raw", "zstd"])
def shards(request, tmp_path):
    rng = np.random.default_rng(0)
    out = tmp_path / "mds"
    with MDSWriter(out=str(out), columns=COLUMNS, compression=request.param, size_limit=4096) as writer:
        for n in rng.integers(1, 65, size=300):  # short and full samples, as data prep writes them
            writer.write({"tokens": rng.integers(0, 50257, size=int(n)).astype(np.uint16)})
    return out


def test_mapped_reader_equals_streamings_and_bounds_its_maps(shards, tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")  # streaming reads it; it must not leak into later runs
    plain = StreamingDataset(local=str(shards), shuffle=False, batch_size=1)
    expected = [plain[i]["tokens"].copy() for i in range(len(plain))]
    monkeypatch.setattr(mds_reader, "MAX_MAPPED_SHARDS", 2)
    mapped = StreamingDataset(local=str(shards), shuffle=False, batch_size=1)
    mds_reader.map_mds_shards(mapped)
    assert len(mapped.shards) > 5 and all(type(s) is mds_reader.MappedMDSReader for s in mapped.shards)
    order = list(range(len(mapped)))[::-1] + list(range(len(mapped)))  # every shard, twice, both ways
    for i in order:
        assert np.array_equal(mapped[i]["tokens"], expected[i]), i
    assert len(mds_reader._mapped) <= 2  # older maps closed: a long shuffled epoch keeps few descriptors
    # A loader worker started by spawn gets the shards pickled.
    copy = pickle.loads(pickle.dumps(mapped.shards[3]))
    assert type(copy) is mds_reader.MappedMDSReader
    assert np.array_equal(copy.get_item(0)["tokens"], mapped.shards[3].get_item(0)["tokens"])
