"""The validation loss the trainer logs: the token-weighted mean cross-entropy over a fixed set of
validation samples, the same set on any number of processes.

The set is the first `eval_batches x micro_batch` samples of the val split (all of it when it
holds fewer). Rank r scores samples r, r + world, ... by index, so no sample is repeated or
dropped (streaming's partition over canonical nodes may do both), and sums in float64 before
one all-reduce."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..data import IGNORE_INDEX, collate_tokens


class Validation:
    def __init__(self, local: str, *, remote: str | None, samples: int, micro_batch: int, seq_len: int,
                 rank: int, world: int):
        from streaming import StreamingDataset

        self.dataset = StreamingDataset(local=local, remote=remote, shuffle=False, batch_size=micro_batch,
                                        replication=None)
        self.samples = min(samples, self.dataset.num_samples)  # len() is the count per rank
        self.micro_batch, self.seq_len = micro_batch, seq_len
        mine = list(range(rank, self.samples, world))
        # Every rank runs the same number of forwards (ZeRO-3 gathers parameters in each one):
        # a rank with fewer samples pads its last batches with masked-out copies of sample 0.
        self.batches = math.ceil(math.ceil(self.samples / world) / micro_batch)
        self.indices = mine + [None] * (self.batches * micro_batch - len(mine))

    def _batch(self, b: int):
        from ..mds_reader import read_token_rows

        chunk = self.indices[b * self.micro_batch:(b + 1) * self.micro_batch]
        ids = np.array([0 if i is None else i for i in chunk], dtype=np.int64)
        x, y = collate_tokens(read_token_rows(self.dataset, ids, self.seq_len + 1), self.seq_len)
        y[torch.tensor([i is None for i in chunk])] = IGNORE_INDEX
        return x, y

    @torch.no_grad()
    def loss(self, engine, device) -> float:
        engine.eval()
        total = torch.zeros(2, device=device, dtype=torch.float64)
        for b in range(self.batches):
            x, y = (t.to(device) for t in self._batch(b))
            n = (y != IGNORE_INDEX).sum()
            loss = engine(x, targets=y)  # run even when n == 0: every rank takes part in each forward
            if n > 0:
                total[0] += loss.double() * n
                total[1] += n
        torch.distributed.all_reduce(total)
        engine.train()
        return (total[0] / total[1]).item() if total[1] > 0 else float("nan")

