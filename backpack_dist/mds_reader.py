"""Reading a micro batch of tokens from MDS shards at once: a shard file is memory-mapped when first
read and stays mapped while among the most recently read (mosaicml-streaming 0.13's MDSReader
opens, seeks and reads twice for every sample), and a full-length sample's tokens are taken
straight from the map. Where a shard is, downloading, decompressing and eviction stay streaming's:
a shard whose file is not there yet is read through the dataset's own get_item, which prepares it,
and the map of a shard streaming evicted is dropped at the next batch."""

from __future__ import annotations

import mmap
import os
import struct
from collections import OrderedDict
from functools import cache
from time import time_ns

import numpy as np
from streaming.base.format.mds.reader import MDSReader

from data_prep.parts import COLUMNS  # the one column data prep writes: tokens, ndarray:uint16

# Each map holds a file descriptor and a shuffled epoch touches every shard, so only the most
# recently read shards stay mapped: a corpus of thousands of shards stays under the fd limit.
MAX_MAPPED_SHARDS = 64
# path -> (map, the file's inode), least recently read first
_mapped: OrderedDict[str, tuple[mmap.mmap, int]] = OrderedDict()
_UINT16 = np.dtype("<u2")
_OUR_COLUMNS = (list(COLUMNS), list(COLUMNS.values()))  # as an MDSReader lists them


def _shard_map(path: str) -> mmap.mmap:
    entry = _mapped.get(path)
    if entry is not None:
        _mapped.move_to_end(path)
        return entry[0]
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        _mapped[path] = (mapped, os.fstat(f.fileno()).st_ino)
    while len(_mapped) > MAX_MAPPED_SHARDS:
        _mapped.popitem(last=False)[1][0].close()  # rows handed out are copies: nothing refers to it
    return mapped


def _drop_maps_of_removed_files() -> None:
    """A map keeps its file's disk space after streaming evicts the shard (under a cache limit):
    drop the maps of files gone or replaced since, so the cache stays within its limit."""
    for path, (mapped, inode) in list(_mapped.items()):
        try:
            if os.stat(path).st_ino == inode:
                continue
        except FileNotFoundError:
            pass
        del _mapped[path]
        mapped.close()


@cache
def _full_row_prefix(n_tokens: int) -> bytes:
    """The bytes before the tokens of an n-token uint16 sample of a one-column MDS shard: the
    column's size, then the ndarray coder's header (one byte of ndim and shape dtype, the shape).
    Built from streaming's own coder, so a shard written any other way is decoded by streaming."""
    from streaming.base.format.mds.encodings import mds_encode

    encoded = mds_encode(COLUMNS["tokens"], np.zeros(n_tokens, dtype=np.uint16))
    return struct.pack("<I", len(encoded)) + encoded[: -2 * n_tokens]


def read_token_rows(dataset, sample_ids: np.ndarray, row_tokens: int) -> list[np.ndarray]:
    """The `tokens` of each global sample id of a StreamingDataset (copies, in order). Samples of
    exactly row_tokens tokens, all but a part's last few, are sliced from the shard's map; any
    other sample is decoded by streaming."""
    if dataset.cache_limit:  # the only case in which streaming evicts shards
        _drop_maps_of_removed_files()
    prefix = _full_row_prefix(row_tokens)
    full_size = len(prefix) + 2 * row_tokens
    offsets = dataset.sample_offset_per_shard
    shard_ids = np.searchsorted(offsets, sample_ids, side="right") - 1
    rows = []
    for sample_id, shard_id, index in zip(sample_ids.tolist(), shard_ids.tolist(),
                                          (sample_ids - offsets[shard_ids]).tolist(), strict=True):
        shard = dataset.shards[shard_id]
        if type(shard) is not MDSReader or (shard.column_names, shard.column_encodings) != _OUR_COLUMNS:
            rows.append(dataset.get_item(sample_id)["tokens"])
            continue
        try:
            mapped = _shard_map(os.path.join(shard.dirname, shard.split, shard.raw_data.basename))
        except FileNotFoundError:  # compressed and not yet decompressed, or evicted: streaming prepares it
            rows.append(dataset.get_item(sample_id)["tokens"])
            continue
        # The header is the sample count, then num_samples + 1 uint32 offsets into the file.
        begin, end = struct.unpack_from("<II", mapped, (1 + index) * 4)
        if end - begin == full_size and mapped[begin: begin + len(prefix)] == prefix:
            rows.append(np.frombuffer(mapped, _UINT16, row_tokens, begin + len(prefix)).copy())
        else:
            rows.append(shard.decode_sample(mapped[begin:end])["tokens"])
    # For streaming's cache eviction, which evicts the shards read longest ago.
    now = time_ns()
    for shard_id in set(shard_ids.tolist()):
        dataset._shard_access_times[shard_id] = now
    return rows
