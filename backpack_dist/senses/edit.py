"""The paper's knowledge edit: in every sense of a target word, replace the component along one
word's embedding (" Apple") by the same-strength component along another's (" HP"):

    c = C_l . e_old / |e_old|^2,   C_l <- C_l - c e_old + c e_new |e_old|^2 / |e_new|^2

i.e. the projection of C_l on e_old is removed, and `new`'s score under sense l gains exactly
what that projection gave `old` (c |e_old|^2 = C_l . e_old); E is the tied embedding.

Sense vectors depend only on the token id, so the edit is applied as a forward hook on the
sense network that swaps in the edited C for the target's tokens: the weights are never
changed, and leaving the `with` block restores the model exactly. The hook recognises the
target's rows by their input embedding, which `wte` copies bit for bit from its weight row.
"""

from __future__ import annotations

import contextlib

import torch

from .words import SenseToolError, require_backpack, token_text, vocabulary_senses, word_tokens


def _single_token(tokenizer, word: str, role: str) -> int:
    ids = word_tokens(tokenizer, word)
    if len(ids) != 1:
        pieces = " + ".join(repr(token_text(tokenizer, t)) for t in ids)
        raise SenseToolError(f"the {role} word {word!r} is {len(ids)} tokens ({pieces}); "
                             "the edit direction needs a single-token word")
    return ids[0]


def edited_sense_vectors(senses: torch.Tensor, e_old: torch.Tensor, e_new: torch.Tensor) -> torch.Tensor:
    """Apply the edit to sense vectors (..., k, d) for directions e_old, e_new (d,)."""
    senses, e_old, e_new = senses.float(), e_old.float(), e_new.float()
    c = (senses @ e_old) / e_old.dot(e_old)  # (..., k)
    shift = e_new * (e_old.dot(e_old) / e_new.dot(e_new)) - e_old
    return senses + c.unsqueeze(-1) * shift


@contextlib.contextmanager
def knowledge_edit(model, tokenizer, target: str, old: str, new: str):
    """Within the block, every sense of every token of `target` has its `old` direction replaced
    by `new`. Yields a dict describing the edit (token ids and texts)."""
    require_backpack(model, "knowledge edits")
    target_ids = word_tokens(tokenizer, target)
    old_id, new_id = _single_token(tokenizer, old, "old"), _single_token(tokenizer, new, "new")
    if old_id == new_id:
        raise SenseToolError(f"old and new words are the same token ({token_text(tokenizer, old_id)!r})")
    E = model.output_embedding().detach()
    ids = torch.tensor(target_ids, device=E.device)
    edited = edited_sense_vectors(vocabulary_senses(model, ids), E[old_id], E[new_id])
    keys = model.wte.weight.detach()[ids]  # (n, d): the inputs the sense network sees for the targets

    def swap_in_edited(_module, inputs, output):
        (e,) = inputs
        flat_e, flat_out = e.reshape(-1, e.shape[-1]), output.reshape(-1, *output.shape[-2:]).clone()
        for key, c in zip(keys, edited, strict=True):
            rows = (flat_e == key).all(dim=-1)
            flat_out[rows] = c.to(flat_out.dtype)
        return flat_out.reshape(output.shape)

    handle = model.sense_network.register_forward_hook(swap_in_edited)
    try:
        yield {"target": [token_text(tokenizer, t) for t in target_ids], "target_ids": target_ids,
               "old": token_text(tokenizer, old_id), "old_id": old_id,
               "new": token_text(tokenizer, new_id), "new_id": new_id}
    finally:
        handle.remove()
