"""A StreamingDataset that hands a loader worker's samples over a whole micro batch at a time.

mosaicml-streaming's __iter__ yields one sample dict at a time, and with a DataLoader batching
them that per-sample path (the id generator, the shard lookup, the decoding, the fetcher) was most
of a worker's time. This subclass keeps streaming's partition of the epoch (the same samples in
the same order, and streaming's own resume state) and reads each micro batch's tokens in one call.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, wait
from itertools import islice
from threading import Event

import numpy as np
from streaming import StreamingDataset
from streaming.base.dataset import _Iterator, _ShardState

from .mds_reader import read_token_rows


def as_is(batch):
    """The DataLoader's collate for MicroBatchDataset: its items are batches already (the default
    would turn numpy arrays into tensors, which then cross from the worker in shared memory)."""
    return batch


class MicroBatchDataset(StreamingDataset):
    """Yields pack_tokens arrays of `batch_size` samples (with their global ids if with_ids):
    what StreamingDataset would give a DataLoader(batch_size=batch_size, drop_last=True) worker,
    batch for batch. Use it with DataLoader(batch_size=None, collate_fn=as_is)."""

    def __init__(self, *, seq_len: int, with_ids: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.seq_len, self.with_ids = seq_len, with_ids

    def __iter__(self):
        from .data import pack_tokens

        for ids in self._micro_batch_ids():
            batch = pack_tokens(read_token_rows(self, ids, self.seq_len + 1), self.seq_len)
            yield (batch, ids) if self.with_ids else batch

    def _micro_batch_ids(self):
        """This worker's sample ids for the rest of the epoch, batch_size at a time (a last short
        batch dropped). Up to the per-sample loop this is StreamingDataset.__iter__ (streaming
        0.13); tests/test_micro_batches.py checks the order against it."""
        if hasattr(self, "_iterator"):  # threads of an epoch left unfinished
            self._iterator.exit()
        if not hasattr(self, "_executor"):
            self._executor = ThreadPoolExecutor()
        if not hasattr(self, "_event"):
            self._event = Event()
        elif self._event.is_set():
            raise RuntimeError("Background thread failed. Check other traceback.")
        self._unique_worker_world = self._unique_rank_world.detect_workers()
        self._parallel_worker_world = self._parallel_rank_world.detect_workers()
        epoch, sample_in_epoch = self._resume_incr_epoch()
        sample_ids = self._get_work(epoch, sample_in_epoch)  # -1: padding streaming skips
        size = self.batch_size
        if (self._shard_states.numpy() == _ShardState.LOCAL).all():
            # Nothing to download: no threads, and the ids without a per-sample loop.
            ids = sample_ids[sample_ids != -1]
            for start in range(0, len(ids) - size + 1, size):
                yield ids[start: start + size]
            return
        # Shards to download: streaming's threads fetch ahead, and its loop yields ids as they are ready.
        self._iterator = it = _Iterator(sample_ids)
        futures = [self._executor.submit(thread, it) for thread in (self._prepare_thread, self._ready_thread)]
        for future in futures:
            future.add_done_callback(self.on_exception)
        ready = self._each_sample_id(it)
        while len(ids := np.fromiter(islice(ready, size), np.int64)) == size:
            yield ids
        wait(futures, return_when="FIRST_EXCEPTION")
        it.exit()
        for future in futures:  # a failed download ends the loop above: say so, not a short epoch
            future.result()
