"""Training data: mosaicml-streaming over the data-prep output, with an exact, resumable
position in the stream.

Sample order is fixed by the shuffle seed and `num_canonical_nodes` (not by the number of
processes), and the position is counted in global samples, so a run resumes on any number of
processes at exactly the sample where it stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal

import numpy as np
import torch

from .model.loss import IGNORE_INDEX

# The signals that ask a run to save and stop (Slurm sends SIGTERM on preemption and scancel,
# SIGUSR1 with --signal); the trainer handles them at a step boundary.
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


@contextlib.contextmanager
def one_job_registers_at_a_time():
    """Collective: every rank creates its datasets inside. mosaicml-streaming registers a dataset in
    shared memory under the first free prefix, and two jobs starting on one node at the same
    moment can take the same one (FileExistsError: '/000193_locals'). The node's first rank holds
    the node's lock (streaming_memory.node_lock) until every rank is done, so one job at a time
    registers there; it first removes the shared memory that killed jobs left. Every rank records
    itself as an owner of the prefixes it registered, so a later job can tell they are live."""
    from .streaming_memory import node_lock, registered_here, remove_stale

    with contextlib.ExitStack() as stack:
        if int(os.environ.get("LOCAL_RANK", "0")) == 0:
            stack.enter_context(node_lock())
            # Under the lock no job of ours is between creating its files and recording them. Best
            # effort: an error here must not keep this rank from the barrier the others wait at.
            try:
                stale = remove_stale()
            except OSError as e:
                stale = []
                print(f"warning: could not check /dev/shm for killed jobs' streaming memory: {e}", flush=True)
            if stale:
                print(f"removed the streaming shared memory of {len(stale)} killed process(es) from /dev/shm "
                      f"(prefixes {', '.join(stale[:5])}{', ...' if len(stale) > 5 else ''})", flush=True)
        torch.distributed.barrier()  # no rank registers before its node holds the lock
        with registered_here():
            yield
        torch.distributed.barrier()


def _outlive_stop_signals(_worker_id: int) -> None:
    """Slurm signals every process of a job: a data-loader worker that died of it would crash the
    trainer before it can save. Workers stop when the trainer closes the loader."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def pack_tokens(rows: list[np.ndarray], seq_len: int) -> np.ndarray:
    """Samples' tokens, up to seq_len+1 each -> one (B, seq_len+1) int64 array, positions past a
    short sample's end (the remainder at the end of a data-prep part) set to IGNORE_INDEX.
    An array, not tensors: a loader worker sends it through its pipe as plain bytes, which costs
    less than placing tensors in shared memory (a file and a descriptor per tensor per batch)."""
    rows = [r[: seq_len + 1] for r in rows]
    if all(len(r) == seq_len + 1 for r in rows):
        return np.stack(rows).astype(np.int64)
    batch = np.full((len(rows), seq_len + 1), IGNORE_INDEX, dtype=np.int64)
    for i, tokens in enumerate(rows):
        batch[i, : len(tokens)] = tokens
    return batch


def unpack_tokens(batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """pack_tokens' array -> (inputs, targets), (B, seq_len) each: padded inputs read token 0 and
    padded targets are IGNORE_INDEX, so they add nothing to the loss."""
    batch = torch.from_numpy(batch)
    return batch[:, :-1].clamp(min=0), batch[:, 1:].contiguous()


def collate_tokens(rows: list[np.ndarray], seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples' tokens, up to seq_len+1 each -> (inputs, targets), (B, seq_len) each."""
    return unpack_tokens(pack_tokens(rows, seq_len))


class TokenStream:
    """An endless iterator of (inputs, targets) micro batches for this rank, epoch after epoch."""

    def __init__(self, local: str, *, remote: str | None, micro_batch: int, seq_len: int, shuffle: bool, seed: int,
                 num_canonical_nodes: int, num_workers: int, world_size: int):
        from . import sample_ids
        from .micro_batches import MicroBatchDataset

        self.with_ids = sample_ids.enabled()  # a debugging aid: the ids of the samples each step took
        self.consumed_ids: list[int] = []
        self.dataset = MicroBatchDataset(
            local=local, remote=remote, shuffle=shuffle, shuffle_seed=seed, batch_size=micro_batch,
            num_canonical_nodes=num_canonical_nodes, replication=None, seq_len=seq_len, with_ids=self.with_ids)
        self.micro_batch, self.num_workers = micro_batch, num_workers
        self.world_size = world_size
        self.epoch, self.sample_in_epoch = 0, 0  # global samples consumed in this epoch
        self._iterator = None

    def _loader(self):
        from .micro_batches import as_is

        # The dataset yields whole micro batches; the loader only runs it in worker processes.
        return torch.utils.data.DataLoader(
            self.dataset, batch_size=None, num_workers=self.num_workers, collate_fn=as_is,
            persistent_workers=False,
            worker_init_fn=_outlive_stop_signals,
            generator=torch.Generator())  # its own seed draw must not advance the global (dropout) RNG

    def __iter__(self):
        return self

    def close(self) -> None:
        """Stop the loader's workers now: dropping the iterator shuts them down."""
        self._iterator = None

    def __next__(self):
        while True:
            if self._iterator is None:
                self._iterator = iter(self._loader())
            try:
                batch = next(self._iterator)
            except StopIteration:
                self._iterator = None
                if self.sample_in_epoch == 0:  # a whole epoch without one full micro batch: it would spin forever
                    raise ValueError(f"the data has fewer samples per process than one micro batch of "
                                     f"{self.micro_batch}; lower --micro_batch or prepare more data") from None
                self.epoch, self.sample_in_epoch = self.epoch + 1, 0
                continue
            self.sample_in_epoch += self.micro_batch * self.world_size
            if self.with_ids:
                batch, ids = batch
                self.consumed_ids += ids.tolist()
            return unpack_tokens(batch)

    def take_sample_ids(self) -> list[int]:
        """The ids of the samples this rank took since the last call (BACKPACK_DEBUG_SAMPLE_IDS)."""
        ids, self.consumed_ids = self.consumed_ids, []
        return ids

    def state_dict(self) -> dict:
        state = self.dataset.state_dict(num_samples=self.sample_in_epoch, from_beginning=True)
        state["epoch"] = self.epoch
        return state

    def load_state_dict(self, state: dict) -> None:
        """Call before the first batch; the next batch is the first one not yet trained on."""
        self.epoch, self.sample_in_epoch = state["epoch"], state["sample_in_epoch"]
        self.dataset.load_state_dict(state)
