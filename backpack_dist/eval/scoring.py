"""Batched log-likelihoods of continuations: the one scoring core behind LAMBADA, BLiMP, WikiText,
OpenWebText and the lm-evaluation-harness adapter.

A request is (context token ids, continuation token ids). Its score is the sum of the
continuation's log-probabilities given everything before it, plus whether every continuation
token is the greedy argmax. Requests are sorted by length so a batch pads little; only the
hidden states of scored positions go through the (vocabulary-sized) output layer, in fp32.
Under torch.distributed each rank scores every world_size-th request and the results are
gathered, so a sharded run returns exactly what a single process returns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

Request = tuple[Sequence[int], Sequence[int]]

# Rows of hidden states sent through the output layer at once: bounds the fp32 logits to
# about 8192 x 50257 x 4 bytes = 1.6 GB whatever the batch size.
LOGIT_ROWS = 8192


def default_dtype(device) -> torch.dtype:
    """bf16 autocast on GPUs, fp32 on CPUs (where bf16 matmuls are slow and gain nothing)."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


@dataclass
class Scorer:
    model: torch.nn.Module
    eot_token: int
    batch_size: int = 16
    dtype: torch.dtype | None = None
    progress: bool = True

    def __post_init__(self):
        self.device = next(self.model.parameters()).device
        if self.dtype is None:
            self.dtype = default_dtype(self.device)
        self.seq_len = self.model.config.seq_len

    def _autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def window(self, context: Sequence[int], continuation: Sequence[int]) -> tuple[list[int], int]:
        """The model input for one request and how many of its last positions are scored.
        An empty context becomes the end-of-text token (sentence scores "without context");
        a context longer than the model's window is cut on the left."""
        if not continuation:
            raise ValueError("cannot score an empty continuation")
        if len(continuation) > self.seq_len:
            raise ValueError(f"continuation of {len(continuation)} tokens exceeds the model context of "
                             f"{self.seq_len}; split it into rolling windows (see rolling_windows)")
        context = list(context) or [self.eot_token]
        tokens = (context + list(continuation))[-(self.seq_len + 1):]
        return tokens[:-1], len(continuation)

    @torch.no_grad()
    def loglikelihoods(self, requests: Sequence[Request], desc: str = "scoring") -> list[tuple[float, bool]]:
        """(sum of continuation log-probs, all continuation tokens greedy) for every request, in order."""
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        mine = list(range(rank, len(requests), world))
        local = self._score(requests, mine, desc, show=self.progress and rank == 0)
        if world == 1:
            return [local[i] for i in mine]
        gathered: list[dict] = [None] * world  # type: ignore[list-item]
        dist.all_gather_object(gathered, local)
        merged = {i: v for part in gathered for i, v in part.items()}
        return [merged[i] for i in range(len(requests))]

    def _score(self, requests, indices, desc, show) -> dict[int, tuple[float, bool]]:
        windows = {i: self.window(*requests[i]) for i in indices}
        order = sorted(indices, key=lambda i: -len(windows[i][0]))  # longest first: OOM shows up at once
        results: dict[int, tuple[float, bool]] = {}
        batches = [order[s:s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        for batch in tqdm(batches, desc=desc, disable=not show, unit="batch"):
            width = len(windows[batch[0]][0])
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            rows, cols, targets, owners = [], [], [], []
            for b, i in enumerate(batch):
                inputs, n_scored = windows[i]
                ids[b, :len(inputs)] = torch.tensor(inputs)
                continuation = list(requests[i][1])
                start = len(inputs) - n_scored
                rows += [b] * n_scored
                cols += range(start, len(inputs))
                targets += continuation
                owners += [i] * n_scored
            with self._autocast():
                hidden = self.model.final_hidden(ids.to(self.device))
            picked = hidden[torch.tensor(rows), torch.tensor(cols)].float()
            targets_t = torch.tensor(targets, device=self.device)
            logprobs, greedy = [], []
            for s in range(0, len(targets), LOGIT_ROWS):
                logits = self.model.logits_from_hidden(picked[s:s + LOGIT_ROWS]).float()
                t = targets_t[s:s + LOGIT_ROWS]
                logprobs.append(logits.log_softmax(-1).gather(1, t[:, None]).squeeze(1))
                greedy.append(logits.argmax(-1) == t)
            logprobs_t, greedy_t = torch.cat(logprobs).double().cpu(), torch.cat(greedy).cpu()
            owners_t = torch.tensor(owners)
            for i in batch:
                mask = owners_t == i
                results[i] = (float(logprobs_t[mask].sum()), bool(greedy_t[mask].all()))
        return results

    def rolling_loglikelihoods(self, token_lists: Sequence[Sequence[int]], desc: str = "rolling") -> list[float]:
        """Total log-likelihood of each whole token sequence, scored in disjoint windows."""
        requests, owners = [], []
        for doc, tokens in enumerate(token_lists):
            for window in rolling_windows(tokens, self.seq_len, self.eot_token):
                requests.append(window)
                owners.append(doc)
        totals = [0.0] * len(token_lists)
        for doc, (ll, _) in zip(owners, self.loglikelihoods(requests, desc=desc), strict=True):
            totals[doc] += ll
        return totals


def rolling_windows(tokens: Sequence[int], seq_len: int, eot_token: int) -> list[Request]:
    """Windows that score every token exactly once: window w predicts tokens [w*seq_len,
    (w+1)*seq_len), so the predicted sets are disjoint and no prediction sees more than seq_len
    tokens. A full window is conditioned on the one token before it (end-of-text for the first);
    the last, shorter window is filled up to seq_len with the tokens before it. This is
    lm-evaluation-harness's rolling log-likelihood (context length one), token for token."""
    padded = [eot_token] + list(tokens)  # padded[p] is the token before tokens[p]
    windows = []
    for start in range(0, len(tokens), seq_len):
        end = min(start + seq_len, len(tokens))
        windows.append((padded[max(0, end - seq_len):start + 1], padded[start + 1:end + 1]))
    return windows
