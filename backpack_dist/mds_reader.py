"""A faster MDS shard reader for training: the shard file is memory-mapped once per process
instead of opened, seeked and read twice for every sample (mosaicml-streaming 0.13's MDSReader),
which was about half of a loader worker's time per sample. Everything else (where the shard is,
downloading, decompressing, eviction, decoding) stays streaming's."""

from __future__ import annotations

import mmap
import os
import struct
from collections import OrderedDict

from streaming.base.format.mds.reader import MDSReader

# Each map holds a file descriptor and a shuffled epoch touches every shard, so only the most
# recently read shards stay mapped: a corpus of thousands of shards stays under the fd limit.
MAX_MAPPED_SHARDS = 64
_mapped: OrderedDict[str, mmap.mmap] = OrderedDict()  # path -> map, least recently read first


def _shard_map(path: str) -> mmap.mmap:
    mapped = _mapped.get(path)
    if mapped is not None:
        _mapped.move_to_end(path)
        return mapped
    with open(path, "rb") as f:
        mapped = _mapped[path] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if len(_mapped) > MAX_MAPPED_SHARDS:
        _mapped.popitem(last=False)[1].close()  # samples handed out are copies: nothing refers to it
    return mapped


class MappedMDSReader(MDSReader):
    def get_sample_data(self, idx: int) -> bytes:
        """The raw bytes of sample `idx`, as MDSReader.get_sample_data returns them."""
        # Mapped when first read: streaming has made the file ready by then (downloaded, decompressed).
        mapped = _shard_map(os.path.join(self.dirname, self.split, self.raw_data.basename))
        # The header is the sample count, then num_samples + 1 uint32 offsets into the file.
        begin, end = struct.unpack_from("<II", mapped, (1 + idx) * 4)
        if begin >= end:
            raise IndexError(f"Relative sample index {idx} is not present in the {self.raw_data.basename} file.")
        return mapped[begin:end]


def map_mds_shards(dataset) -> None:
    """Make a StreamingDataset read its MDS shards through MappedMDSReader (other formats unchanged)."""
    for shard in dataset.shards:
        if type(shard) is MDSReader:
            shard.__class__ = MappedMDSReader
