"""The "backpack" model of lm-evaluation-harness (the optional `lm_eval` extra):

    lm_eval --model backpack --model_args checkpoint=PATH[,dtype=bf16] --tasks lambada_openai

Any export dir, run dir or checkpoint that load_pretrained accepts works, for both model
families. Log-likelihoods come from the same Scorer as `python -m backpack_dist.eval`, so the two
agree on the same requests. `lm_eval` finds the name through lm_eval_hook (installed by
`python -m backpack_dist.eval install_lm_eval`); importing this module also registers it."""

from __future__ import annotations

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from ..pretrained import load_pretrained
from .scoring import Scorer


@register_model("backpack")
class BackpackLMEval(LM):
    def __init__(self, checkpoint, device=None, batch_size=16, dtype=None, max_gen_toks=256, **_harness_extras):
        super().__init__()
        from .options import DTYPES

        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}: use bf16 or fp32")
        if device is None or (str(device).startswith("cuda") and not torch.cuda.is_available()):
            # lm_eval's default is cuda:0 even on machines without a GPU; like its "hf" model, fall back.
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model, self.tokenizer, self.info = load_pretrained(checkpoint, device)
        # lm_eval passes its --batch_size (1 by default, or "auto"); numbers are honoured.
        size = int(batch_size) if str(batch_size).isdigit() else 16
        self.scorer = Scorer(self.model, self.tokenizer.eot_token, batch_size=size, dtype=DTYPES.get(dtype))
        self.max_gen_toks = int(max_gen_toks)
        self._device = self.scorer.device

    # lm_eval always adds its own --batch_size and --device: a value given in --model_args
    # (checkpoint=PATH,batch_size=32) wins instead of being passed twice.
    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None):
        extras = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in arg_dict}
        return cls(**arg_dict, **extras)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    def encode_request(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of (context, continuation); trailing spaces of the context move to the
        continuation, where GPT-2's tokenizer attaches them to the next word."""
        stripped = context.rstrip(" ")
        continuation = context[len(stripped):] + continuation
        return self.tokenizer.encode_ordinary(stripped), self.tokenizer.encode_ordinary(continuation)

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        pairs = [self.encode_request(*req.args) for req in requests]
        return self.scorer.loglikelihoods(pairs, desc="lm_eval loglikelihood")

    def loglikelihood_rolling(self, requests) -> list[float]:
        tokens = [self.tokenizer.encode_ordinary(req.args[0]) for req in requests]
        return self.scorer.rolling_loglikelihoods(tokens, desc="lm_eval rolling")

    @torch.no_grad()
    def generate_until(self, requests) -> list[str]:
        """Greedy decoding, one request at a time, until a stop string, end-of-text or max_gen_toks."""
        outputs = []
        seq_len = self.model.config.seq_len
        for req in requests:
            context, gen_kwargs = req.args
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            ids = self.tokenizer.encode_ordinary(context) or [self.tokenizer.eot_token]
            generated: list[int] = []
            text = ""
            for _ in range(int(gen_kwargs.get("max_gen_toks", self.max_gen_toks))):
                window = torch.tensor([(ids + generated)[-seq_len:]], device=self._device)
                with self.scorer._autocast():
                    hidden = self.model.final_hidden(window)[0, -1:]
                next_id = int(self.model.logits_from_hidden(hidden.float()).argmax(-1))
                if next_id == self.tokenizer.eot_token:
                    break
                generated.append(next_id)
                text = self.tokenizer.decode(generated)
                if any(stop in text for stop in until):
                    break
            for stop in until:
                text = text.split(stop)[0]
            outputs.append(text)
        return outputs


# Registering our name makes lm_eval's registry non-empty, after which it would no longer load its
# built-in models on first use; load them now so "hf" and friends stay available.
import lm_eval.models  # noqa: E402, F401
