"""Command line for the sense tools (fire). Every command takes --checkpoint (an export dir, a
training run dir or a checkpoint dir) and --json to print the raw data instead of tables.

  python -m backpack_dist.senses lookup   --checkpoint PATH --word " science" --top 10
  python -m backpack_dist.senses predict  --checkpoint PATH --text "When the nurse came into the room," \
                                          --scale "nurse:10=0"
  python -m backpack_dist.senses edit     --checkpoint PATH --target MacBook --old Apple --new HP \
                                          --prompt "The MacBook is made by"
  python -m backpack_dist.senses generate --checkpoint PATH --prompt "The game" --topic "science,physics"
  python -m backpack_dist.senses bias     --checkpoint PATH --sense 10
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys

from .. import cli
from ..eval.options import resolve_device
from . import bias as bias_lib
from .edit import knowledge_edit
from .generate import sample, split_topic_words, topic_control, topic_fraction
from .intervention import next_token_probs, parse_scales
from .intervention import predict as predict_lib
from .lookup import lookup_word
from .words import SenseToolError, encode_text, require_backpack, token_text, word_tokens


@dataclasses.dataclass(frozen=True, kw_only=True)
class SenseOptions:
    checkpoint: str = ""
    """A Backpack: an exported model, a run directory, one of its checkpoints or a transformers folder (required)."""
    json: bool = False
    """Print the raw data as JSON instead of tables."""
    device: str | None = None
    """cpu, cuda or cuda:N; default: the GPU when there is one."""

    def __post_init__(self):
        if not self.checkpoint:
            raise cli.UsageError("no checkpoint given: pass --checkpoint PATH (an exported model or a run directory)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sampling:
    max_new_tokens: int = 40
    """Tokens to generate."""
    temperature: float = 1.0
    """Sampling temperature; 0 is greedy."""
    top_k: int = 50
    """Sample from the k most likely tokens (0: all)."""
    seed: int = 0
    """The sampling seed."""

    def __post_init__(self):
        cli.check_range(self, "max_new_tokens", low=1)
        cli.check_range(self, "temperature", low=0)
        cli.check_range(self, "top_k", low=0)

    def args(self) -> tuple[int, float, int, int]:
        return self.max_new_tokens, self.temperature, self.top_k, self.seed


def _load(options: SenseOptions):
    from ..pretrained import load_pretrained

    model, tokenizer, _info = load_pretrained(options.checkpoint, resolve_device(options.device))
    return model, tokenizer


def _cli(fn):
    """Bad input the sense tools find (SenseToolError, ValueError) ends as one line and exit 2."""

    @functools.wraps(fn)
    def run(options):
        try:
            return fn(options)
        except (SenseToolError, ValueError) as e:
            raise cli.UsageError(str(e)) from None

    return run


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _pieces(tokenizer, ids) -> str:
    return " + ".join(repr(token_text(tokenizer, t)) for t in ids)


def _show(token: str) -> str:
    return repr(token)


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False))  # NaN is not JSON


@dataclasses.dataclass(frozen=True, kw_only=True)
class LookupOptions(SenseOptions):
    word: str = cli.positional()
    """The word ("science" is read as " science")."""
    top: int = 10
    """Top and bottom items per sense."""
    relative: bool = False
    """Rank by the difference from the word's mean sense (what sets each sense apart)."""

    def __post_init__(self):
        super().__post_init__()
        cli.check_range(self, "top", low=1)


@_cli
def lookup(o: LookupOptions):
    """Top and bottom vocabulary items of E^T C(x)_l for each sense l of a word ("science" is read as " science");
    --relative ranks by the difference from the word's mean sense (what sets each sense apart)."""
    top = o.top
    model, tokenizer = _load(o)
    result = lookup_word(model, tokenizer, o.word, top, o.relative)
    if o.json:
        return _print_json(result)
    for entry in result:
        print(f"token {_show(entry['token'])} (id {entry['id']}): {len(entry['senses'])} senses, top/bottom {top}")
        for s in entry["senses"]:
            for sign, key in (("+", "top"), ("-", "bottom")):
                items = "  ".join(f"{_show(i['token'])} {i['score']:.3g}" for i in s[key])
                print(f"  sense {s['sense']:>2} {sign} {items}")


def _prediction_table(before, after=None) -> str:
    lines = [f"{'rank':>4}  {'before':<24}{'prob':>10}" + (f"    {'after':<24}{'prob':>10}" if after else "")]
    for r, b in enumerate(before):
        line = f"{r + 1:>4}  {_show(b['token']):<24}{b['prob']:>10.4g}"
        if after:
            a = after[r]
            line += f"    {_show(a['token']):<24}{a['prob']:>10.4g}"
        lines.append(line)
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PredictOptions(SenseOptions):
    text: str = cli.positional()
    """The context whose next word is predicted."""
    top: int = 10
    """Rows of the table."""
    scale: str | None = None
    """Sense scales WORD:SENSE=FACTOR[,...] (SENSE may be *), e.g. nurse:10=0: shows before and after."""

    def __post_init__(self):
        super().__post_init__()
        cli.check_range(self, "top", low=1)


@_cli
def predict(o: PredictOptions):
    """Next-word probabilities; --scale "WORD:SENSE=FACTOR[,...]" (e.g. nurse:10=0) shows before and after."""
    scales = parse_scales(o.scale)
    model, tokenizer = _load(o)
    result = predict_lib(model, tokenizer, o.text, scales, o.top)
    if o.json:
        return _print_json(result)
    print("tokens: " + " ".join(_show(t) for t in result["tokens"]))
    if scales:
        print("scales: " + ", ".join(f"{s.word}:{'*' if s.sense is None else s.sense}={s.factor:g}" for s in scales))
    print(_prediction_table(result["before"], result.get("after")))


@dataclasses.dataclass(frozen=True, kw_only=True)
class EditOptions(SenseOptions, Sampling):
    target: str = "MacBook"
    """The word whose senses are edited."""
    old: str = "Apple"
    """The direction removed from the target's senses."""
    new: str = "HP"
    """The direction put in its place."""
    prompt: str = "The MacBook is made by"
    """The prompt to generate from, before and after the edit."""
    max_new_tokens: int = 30
    """Tokens to generate."""
    temperature: float = 0.0
    """Sampling temperature; 0 is greedy."""

    def __post_init__(self):
        SenseOptions.__post_init__(self)
        Sampling.__post_init__(self)


@_cli
def edit(o: EditOptions):
    """Knowledge edit: replace the `old` direction by `new` in every sense of `target`, then generate."""
    sampling = o.args()
    model, tokenizer = _load(o)
    require_backpack(model, "knowledge edits")
    target, prompt, old, new, json = o.target, o.prompt, o.old, o.new, o.json
    ids = encode_text(tokenizer, prompt, model.config.seq_len)
    gen = functools.partial(sample, model, tokenizer, prompt, *sampling)

    def probe(edit_info):
        probs = next_token_probs(model, ids)
        return {"p_old": float(probs[edit_info["old_id"]]), "p_new": float(probs[edit_info["new_id"]]),
                "completion": gen()["completion"]}

    with knowledge_edit(model, tokenizer, target, old, new) as info:
        # The edit swaps the sense vectors of each of the target's tokens, wherever they occur.
        if len(info["target_ids"]) > 1:
            _warn(f"the target {target!r} is {len(info['target_ids'])} tokens "
                  f"({_pieces(tokenizer, info['target_ids'])}); each of them is edited wherever it occurs")
        if not set(info["target_ids"]) & set(ids):
            _warn(f"the prompt {prompt!r} does not contain the target {target!r}: p(old) and p(new) cannot change, "
                  "only the target's later occurrences in the completion are edited; put the target in --prompt")
        after = probe(info)
    before = probe(info)
    result = {"edit": info, "prompt": prompt, "before": before, "after": after}
    if json:
        return _print_json(result)
    print(f"edit: in every sense of {' + '.join(map(_show, info['target']))}, "
          f"{_show(info['old'])} -> {_show(info['new'])}")
    for name, r in (("before", before), ("after", after)):
        print(f"{name:>6}: p({_show(info['old'])})={r['p_old']:.4g}  p({_show(info['new'])})={r['p_new']:.4g}  "
              f"| {prompt}{r['completion']}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class GenerateOptions(SenseOptions, Sampling):
    prompt: str = cli.positional()
    """The prompt to continue."""
    topic: str | None = None
    """Topic words w1,w2,...: up-weight the senses that score high on them."""
    strength: float = 3.0
    """The factor of the up-weighted senses."""
    threshold: float = 2.0
    """How high a sense must score on the topic to be up-weighted."""

    def __post_init__(self):
        SenseOptions.__post_init__(self)
        Sampling.__post_init__(self)


@_cli
def generate(o: GenerateOptions):
    """Sample a continuation; --topic "w1,w2,..." up-weights (x strength) senses that score high on the topic."""
    sampling = o.args()
    prompt, topic, strength, threshold, json = o.prompt, o.topic, o.strength, o.threshold, o.json
    model, tokenizer = _load(o)
    gen = functools.partial(sample, model, tokenizer, prompt, *sampling)
    plain = gen()
    result = {"prompt": prompt, "plain": plain["completion"]}
    if topic is not None:
        words = split_topic_words(topic)
        split = [w for w in words if len(word_tokens(tokenizer, w)) > 1]
        if split:
            _warn("topic words of several tokens steer towards all their pieces: " + "; ".join(
                f"{w!r} is {_pieces(tokenizer, word_tokens(tokenizer, w))}" for w in split))
        table, summary = topic_control(model, tokenizer, words, strength, threshold)
        steered = gen(scale_table=table)
        result.update(topic=summary, steered=steered["completion"],
                      topic_fraction_plain=topic_fraction(plain["ids"], summary["topic_ids"]),
                      topic_fraction_steered=topic_fraction(steered["ids"], summary["topic_ids"]))
    if json:
        return _print_json(result)
    if topic is None:
        print(f"{prompt}{plain['completion']}")
        return
    s = result["topic"]
    print(f"topic tokens: {' '.join(map(_show, s['topic_tokens']))}; {s['senses_upweighted']} senses x{strength:g}")
    print("strongest: " + ", ".join(f"{_show(i['token'])}#{i['sense']}" for i in s["strongest"]))
    print(f"   plain ({result['topic_fraction_plain']:.0%} topic tokens): {prompt}{plain['completion']}")
    print(f" steered ({result['topic_fraction_steered']:.0%} topic tokens): {prompt}{result['steered']}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class BiasOptions(SenseOptions):
    sense: int | None = None
    """The sense of each profession word to scale; default: report the bias only."""
    factor: float = 0.0
    """The factor for --sense (0 removes it)."""
    professions: str | None = None
    """Professions p1,p2,...; default: the paper's 40."""

    def __post_init__(self):
        super().__post_init__()
        cli.check_range(self, "sense", low=0)


@_cli
def bias(o: BiasOptions):
    """He/she bias ratio over professions, before and after scaling --sense of the profession word by --factor."""
    sense, factor, professions, json = o.sense, o.factor, o.professions, o.json
    model, tokenizer = _load(o)
    if sense is not None:
        if not sense < getattr(model.config, "n_senses", 0) or not model.config.is_backpack:
            require_backpack(model, "bias --sense")
            raise SenseToolError(f"sense {sense} is out of range: this model has senses 0..{model.config.n_senses - 1}")
    if professions is None:
        professions = bias_lib.PROFESSIONS
    else:
        professions = [p.strip() for p in professions.split(",") if p.strip()]
    report = bias_lib.bias_report(model, tokenizer, professions, sense=sense, factor=factor)
    if json:
        return _print_json(report)
    after = sense is not None
    print(f"{'profession':<14}{'before':>10}" + (f"{'after':>10}" if after else ""))
    for row in report["professions"]:
        print(f"{row['profession']:<14}{row['before']:>10.3f}" + (f"{row['after']:>10.3f}" if after else ""))
    summary = f"mean he/she bias ratio: {report['before']:.3f}"
    if after:
        summary += f" -> {report['after']:.3f} with sense {sense} x{factor:g}"
    print(summary)


@dataclasses.dataclass(frozen=True)
class HistoryOptions:
    run: str = cli.positional()
    """A run directory trained with sense probes (its metrics.jsonl)."""
    word: str = " science"
    """A probe word of the run (default probes: " science", " nurse", " bank")."""
    json: bool = False
    """Print the raw data as JSON instead of tables."""


def history(o: HistoryOptions):
    """How each sense's top words changed from probe to probe while the run trained (recorded at
    each validation; see train --probe_words)."""
    from pathlib import Path

    from .probes import history as probe_history

    path = Path(o.run) / "metrics.jsonl"
    if not path.is_file():
        raise cli.UsageError(f"{path} not found: pass a run directory (--run)")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a torn last line of a killed run
    steps = probe_history(records, o.word)
    if not steps:
        words = sorted({w for r in records for w in r.get("probes", {}).get("senses", {})})
        raise cli.UsageError(f"{path} has no sense probes of {o.word!r}" + (
            f"; its probe words are {', '.join(map(repr, words))}" if words else
            "; train with sense probes on (the default for a Backpack)"))
    if o.json:
        return _print_json([{"step": step, "senses": senses} for step, senses in steps])
    previous = None
    for step, senses in steps:
        print(f"step {step}:")
        for sense, words in enumerate(senses):
            changed = previous is not None and previous[sense] != words
            print(f"  sense {sense:>2}{' *' if changed else '  '} " + "  ".join(map(_show, words)))
        previous = senses
    print("(* : the sense's top words changed since the previous probe)")


COMMANDS = {"lookup": lookup, "predict": predict, "edit": edit, "generate": generate, "bias": bias,
            "history": history}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    cli.run(COMMANDS, argv, name="python -m backpack_dist.senses")


if __name__ == "__main__":
    main()
