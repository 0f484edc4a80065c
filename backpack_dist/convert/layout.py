"""Weight names and orientation: ours <-> transformers' GPT-2 and the authors' Backpack.

transformers' GPT-2 modules (c_attn, c_proj, c_fc) are Conv1D, whose weights are stored
(in, out): the transpose of our nn.Linear. The authors' sense_weight_net.c_attn is a plain
nn.Linear, stored as ours. Everything else (LayerNorms, embeddings, biases) is the same tensor.
"""

from __future__ import annotations

import torch

from ..model import ModelConfig

# The authors' prefixes inside BackpackGPT2LMHeadModel, and GPT2LMHeadModel's.
BACKPACK_PREFIX = "backpack."
GPT2_PREFIX = "transformer."

# Our sense network's modules -> theirs (under backpack.).
_SENSE_MODULES = {
    "sense_network.ln_0": "sense_network.ln",
    "sense_network.ln_1": "sense_network.block.ln_1",
    "sense_network.mlp_1": "sense_network.block.mlp",
    "sense_network.ln_2": "sense_network.block.ln_2",
    "sense_network.mlp_2": "sense_network.final_mlp",
    "sense_qk": "sense_weight_net.c_attn",
}
_CONV1D = ("c_attn", "c_proj", "c_fc")



def model_prefix(is_backpack: bool) -> str:
    return BACKPACK_PREFIX if is_backpack else GPT2_PREFIX


def aliases(is_backpack: bool) -> dict[str, str]:
    """Tensors an HF file may hold that are copies of another (the tied output layer, the
    authors' second names for the embeddings): name -> the tensor it must equal."""
    if not is_backpack:
        return {"lm_head.weight": "wte.weight"}
    return {"lm_head.weight": "gpt2_model.wte.weight", "word_embeddings.weight": "gpt2_model.wte.weight",
            "position_embeddings.weight": "gpt2_model.wpe.weight"}


def is_buffer(name: str) -> bool:
    return name.endswith((".attn.bias", ".attn.masked_bias"))


def hf_name(ours: str, is_backpack: bool) -> tuple[str, bool]:
    """(the HF name of one of our tensors, without the model prefix; whether it is transposed)."""
    module, _, leaf = ours.rpartition(".")
    if module.startswith("body."):
        body = module.removeprefix("body.").replace("blocks.", "h.", 1)
        name = ("gpt2_model." if is_backpack else "") + body
        return f"{name}.{leaf}", leaf == "weight" and module.endswith(_CONV1D)
    for our_module, their_module in _SENSE_MODULES.items():
        if module == our_module or module.startswith(our_module + "."):
            name = their_module + module[len(our_module):]
            return f"{name}.{leaf}", leaf == "weight" and our_module != "sense_qk" and module.endswith(_CONV1D)
    raise KeyError(f"no Hugging Face name for {ours}")


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[str, bool, tuple[int, ...]]]:
    """HF name (without prefix) -> (our name, transposed, HF shape) for every tensor of cfg's model."""
    from ..model import model_from_config

    with torch.device("meta"):  # shapes only: nothing is allocated
        state = model_from_config(cfg).state_dict()
    table = {}
    for ours, tensor in state.items():
        name, transposed = hf_name(ours, cfg.is_backpack)
        shape = tuple(tensor.shape[::-1]) if transposed else tuple(tensor.shape)
        table[name] = (ours, transposed, shape)
    return table


def fold_inverse_layer_scale(state_dict: dict, cfg: ModelConfig) -> dict:
    """The same function with the 1/(i+1) attention scaling moved into layer i's query weights
    and bias: transformers' default (sdpa) GPT-2 attention ignores scale_attn_by_inverse_layer_idx,
    a scaled query works under every attention implementation."""
    if not cfg.scale_attn_by_inverse_layer_idx:
        return dict(state_dict)
    folded = dict(state_dict)
    d = cfg.d_model
    for i in range(cfg.n_layer):
        for leaf in ("weight", "bias"):
            key = f"body.blocks.{i}.attn.c_attn.{leaf}"
            tensor = state_dict[key].clone()
            tensor[:d] /= i + 1  # rows 0..d of the fused q/k/v projection are the queries
            folded[key] = tensor
    return folded
