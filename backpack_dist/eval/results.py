"""`python -m backpack_dist.eval table results/*.json`: results files as markdown tables in the
layout of the paper's Table 2, each of our figures followed by the paper's in parentheses and our
difference from it; results of the paper's sense-count ablation (Mini, 50k steps) get a table of
their own."""

from __future__ import annotations

import json
import math
from pathlib import Path

from .blimp import SUBTASKS

# Paper Table 2: OWT PPL, LAMBADA PPL, LAMBADA ACC (%), Wikitext PPL, BLiMP (%).
PAPER_TABLE2 = {
    "backpack-micro": (31.5, 110, 24.7, 71.5, 75.6),
    "transformer-micro": (34.4, 201, 21.3, 79.5, 77.8),
    "backpack-mini": (23.5, 42.7, 31.6, 49.0, 76.2),
    "transformer-mini": (24.5, 58.8, 29.7, 52.8, 80.4),
    "backpack-small": (20.1, 26.5, 37.5, 40.9, 76.3),
    "transformer-small": (20.2, 32.7, 34.9, 42.2, 81.9),
}
# Sense-count ablation: Backpack-Mini with k senses trained for 50k steps, OWT PPL per k.
PAPER_ABLATION = {1: 38.5, 4: 29.3, 16: 26.0, 64: 24.0}
ABLATION_MODEL, ABLATION_STEPS = "backpack-mini", 50_000
# Lexical similarity (Spearman): Backpack-Small's best measure per set, and GPT-2 124M embeddings.
PAPER_SIMILARITY = {
    "backpack-small": {"simlex": (0.540, "Sim_min"), "simverb": (0.502, "sense 14"), "rg65": (0.754, "sense 12"),
                       "ws353": (0.749, "sense 12")},
    "transformer-small": {"simlex": (0.478, "emb"), "simverb": (0.363, "emb"), "rg65": (0.634, "emb"),
                          "ws353": (0.681, "emb")},
}
# (header, task, metric, scale to the paper's unit)
COLUMNS = [("OWT PPL", "owt", "ppl", 1), ("LAMBADA PPL", "lambada", "ppl", 1), ("LAMBADA ACC", "lambada", "acc", 100),
           ("Wikitext PPL", "wikitext", "word_ppl", 1), ("BLiMP", "blimp", "acc", 100)]
# Section 6's control experiments: the bias ratio (zeroing one sense) and topic accuracy (in %).
PAPER_CONTROL = {"backpack-small": {"bias_before": 4.34, "bias_after": 2.88, "topic_plain": 7.4,
                                    "topic_steered": 35.3},
                 "transformer-small": {"bias_before": 7.02}}
SIM_COLUMNS = [("SimLex-999", "simlex"), ("SimVerb-3500", "simverb"), ("RG-65", "rg65"), ("WordSim-353", "ws353")]
ORDER = list(PAPER_TABLE2)


def read_results(paths) -> list[dict]:
    reports = []
    for path in paths:
        try:
            report = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read results file {path}: {e}") from None
        fmt = report.get("format") if isinstance(report, dict) else None
        if not isinstance(fmt, str) or not fmt.startswith("backpack-dist-eval/"):
            raise ValueError(f"{path} is not a results file of python -m backpack_dist.eval (no 'format' "
                             "'backpack-dist-eval/...'); pass the --out files it writes")
        results = report.get("results")
        if not isinstance(results, dict) or not all(isinstance(m, dict) for m in results.values()):
            raise ValueError(f"{path} has no 'results' of python -m backpack_dist.eval (a mapping of task to "
                             "metrics); rerun the eval to rewrite it")
        if not isinstance(report.get("model"), dict) or not isinstance(report.get("settings", {}), dict):
            raise ValueError(f"{path} lacks the 'model' or 'settings' of python -m backpack_dist.eval; "
                             "rerun the eval to rewrite it")
        if report.get("model_name") is None and not isinstance(report.get("checkpoint"), str):
            raise ValueError(f"{path} names neither its model nor its checkpoint; rerun the eval to rewrite it")
        reports.append(report)
    if not reports:
        raise ValueError("no results files given: python -m backpack_dist.eval table results/*.json")
    return reports


def _fmt(value, digits=1) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        return "-"
    return f"{value:.{digits}f}"


def paper_size(report: dict, n_senses: int | None = None) -> str | None:
    """The paper model this result is comparable to: its name, when the config has that size
    (with n_senses senses instead of the paper's 16 when given: the ablation's models)."""
    from ..model.config import MODEL_NAMES, model_config

    name = report.get("model_name")
    if name not in MODEL_NAMES:
        return None
    reference = model_config(name, n_senses=n_senses).to_dict()
    keys = ("family", "d_model", "n_layer", "n_head", "n_senses", "vocab_size", "seq_len")
    return name if all(report.get("model", {}).get(k) == reference[k] for k in keys) else None


def ablation_senses(report: dict) -> int | None:
    """k, when the result is of the ablation: a Backpack-Mini of the paper's shape with k senses
    at the ablation's step."""
    k = report.get("model", {}).get("n_senses")
    if report.get("model_name") != ABLATION_MODEL or k not in PAPER_ABLATION or report.get("step") != ABLATION_STEPS:
        return None
    return k if paper_size(report, n_senses=k) else None


def _with_paper(ours: str, value, paper) -> str:
    """'ours (paper) +diff': the difference in the paper's unit, signed (PPL: lower is better)."""
    if paper is None:
        return ours
    cell = f"{ours} ({_fmt(paper)})"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        cell += f" {round(value, 1) - paper:+.1f}"  # of the figures shown
    return cell


def _label(report: dict) -> str:
    name = report.get("model_name") or Path(report["checkpoint"]).name
    if name in PAPER_TABLE2 and paper_size(report) is None:
        name += " (custom size)"
    label = name if report.get("step") is None else f"{name} @{report['step']}"
    return label + (f" (limit {report['settings']['limit']})" if report.get("settings", {}).get("limit") else "")


def _sort_key(report: dict):
    name = report.get("model_name") or ""
    return (ORDER.index(name) if name in ORDER else len(ORDER), name, report.get("step") or 0)


def table2(reports) -> str | None:
    rows = [r for r in sorted(reports, key=_sort_key) if any(task in r["results"] for _, task, *_ in COLUMNS)]
    if not rows:
        return None
    lines = ["| model | " + " | ".join(h for h, *_ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for report in rows:
        paper = PAPER_TABLE2.get(paper_size(report))
        cells = []
        for i, (_, task, metric, scale) in enumerate(COLUMNS):
            metrics = report["results"].get(task, {})
            value = metrics.get(metric)
            value = value * scale if isinstance(value, (int, float)) and not isinstance(value, bool) else None
            ours = _fmt(value)
            subtasks = metrics.get("subtasks")
            if task == "blimp" and isinstance(subtasks, int) and subtasks < len(SUBTASKS) and value is not None:
                ours += f" [{subtasks}/{len(SUBTASKS)} sub-tasks]"  # not comparable with the paper's mean of all
                value = None  # nor is a difference from it
            cells.append(_with_paper(ours, value, paper[i] if paper else None))
        lines.append(f"| {_label(report)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ablation_table(reports) -> str | None:
    rows = sorted((r for r in reports if ablation_senses(r) and "owt" in r["results"]), key=ablation_senses)
    if not rows:
        return None
    lines = ["| senses k | run | OWT PPL |", "|---|---|---|"]
    for report in rows:
        k, value = ablation_senses(report), report["results"]["owt"].get("ppl")
        lines.append(f"| {k} | {_label(report)} | {_with_paper(_fmt(value), value, PAPER_ABLATION[k])} |")
    return "\n".join(lines)


def similarity_table(reports) -> str | None:
    rows = [r for r in sorted(reports, key=_sort_key) if any(t in r["results"] for _, t in SIM_COLUMNS)]
    if not rows:
        return None
    lines = ["| model | " + " | ".join(h for h, _ in SIM_COLUMNS) + " |", "|---" * (len(SIM_COLUMNS) + 1) + "|"]
    for report in rows:
        paper = PAPER_SIMILARITY.get(paper_size(report), {})
        cells = []
        for _, task in SIM_COLUMNS:
            m = report["results"].get(task)
            if m is None:
                cells.append("-")
                continue
            parts = []
            if "sense_min" in m:
                parts += [f"min {_fmt(m['sense_min'], 3)}",
                          f"best {_fmt(m.get('best_sense_rho'), 3)} (sense {m.get('best_sense', '-')})"]
            parts.append(f"emb {_fmt(m.get('embedding'), 3)}")
            if task in paper:
                parts.append(f"(paper {paper[task][0]:.3f} {paper[task][1]})")
            cells.append(", ".join(parts[:-1]) + " " + parts[-1] if task in paper else ", ".join(parts))
        lines.append(f"| {_label(report)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value, paper=None, digits=2, scale=1) -> str:
    value = value * scale if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    ours = _fmt(value, digits)
    return ours if paper is None else f"{ours} ({paper:.{digits}f})"


def control_table(reports) -> str | None:
    """Bias ratio before -> after (the sense zeroed), topic accuracy and fluency plain -> steered,
    edit success before -> after and its collateral KL; the paper's figures in parentheses."""
    keys = ("debias", "topic", "edit")
    rows = [r for r in sorted(reports, key=_sort_key) if any(k in r["results"] for k in keys)]
    if not rows:
        return None
    lines = ["| model | bias ratio | after (sense) | topic acc % | steered % | fluency PPL | edit success % "
             "| collateral KL |", "|---" * 8 + "|"]
    for report in rows:
        paper = PAPER_CONTROL.get(paper_size(report), {})
        d, t, e = (report["results"].get(k, {}) for k in keys)
        plain, steered = t.get("plain", {}), t.get("steered", {})
        after = _cell(d.get("bias_after"), paper.get("bias_after"))
        if "sense" in d:
            after += f" (sense {d['sense']})"
        fluency = _fmt(plain.get("perplexity"))
        if steered:
            fluency += f" -> {_fmt(steered.get('perplexity'))}"
        success = _cell(e.get("success_before"), digits=0, scale=100)
        if "success_after" in e:
            success += f" -> {_cell(e.get('success_after'), digits=0, scale=100)}"
        cells = [_cell(d.get("bias_before"), paper.get("bias_before")), after,
                 _cell(plain.get("accuracy"), paper.get("topic_plain"), 1, 100),
                 _cell(steered.get("accuracy"), paper.get("topic_steered"), 1, 100), fluency, success,
                 _cell(e.get("collateral_kl"), digits=3)]
        lines.append(f"| {_label(report)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(paths) -> str:
    reports = read_results(paths)
    out = []
    table = table2(reports)
    if table:
        out += ["Each cell: ours (the paper's Table 2) ours - paper. ACC and BLiMP in % (higher is better), PPL "
                "lower is better, word-level for Wikitext.", "", table]
    ablation = ablation_table(reports)
    if ablation:
        out += ["", f"Sense-count ablation, {ABLATION_MODEL} at {ABLATION_STEPS} steps, OWT PPL: ours (the paper's) "
                "ours - paper.",
                "", ablation]
    sim = similarity_table(reports)
    if sim:
        out += ["", "Lexical similarity, Spearman rho (Sim_min, best single sense, output embeddings).", "", sim]
    control = control_table(reports)
    if control:
        out += ["", "Control experiments (section 6): ours (the paper's). Topic accuracy counts bag words, not the "
                "paper's classifier; fluency is the PPL of the generations under the model itself.", "", control]
    return "\n".join(out).strip("\n")
