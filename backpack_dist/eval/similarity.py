"""Lexical similarity: Spearman correlation between human ratings and model cosines.

For every model: cosine of output embeddings E[w]. For Backpacks also, for each sense index l,
Sim_l(w, w') = cosine(C(w)_l, C(w')_l), and Sim_min = min over l. Words are prefixed by a space;
a word of several tokens is the mean of its tokens' vectors. The four sets are read from their
original text files in --similarity_dir."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .sources import local_record


@dataclass(frozen=True)
class SimilaritySet:
    title: str
    file_names: tuple[str, ...]  # original release names, matched case-insensitively
    score_column: int


SETS = {
    "simlex": SimilaritySet("SimLex-999", ("simlex-999.txt", "simlex999.txt"), 3),
    "simverb": SimilaritySet("SimVerb-3500", ("simverb-3500.txt", "simverb3500.txt"), 3),
    "rg65": SimilaritySet("RG-65", ("rg65.txt", "rg-65.txt", "rg65.csv", "rg-65.csv", "rg65.tsv"), 2),
    "ws353": SimilaritySet("WordSim-353", ("combined.tab", "combined.csv", "wordsim353.tsv", "wordsim353.txt",
                                           "ws353.txt", "ws353.tsv"), 2),
}


def find_file(directory: Path, spec: SimilaritySet) -> Path:
    by_name = {p.name.lower(): p for p in directory.iterdir() if p.is_file()}
    for name in spec.file_names:
        if name in by_name:
            return by_name[name]
    raise ValueError(f"{directory} has no {spec.title} file (expected one of: {', '.join(spec.file_names)})")


def _fields(line: str) -> list[str]:
    for sep in ("\t", ";", ","):
        if sep in line:
            return [f.strip() for f in line.split(sep)]
    return line.split()


def read_pairs(path: Path, spec: SimilaritySet) -> list[tuple[str, str, float]]:
    """(word1, word2, human score) from one original file; a header line is skipped."""
    pairs = []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = _fields(line)
        try:
            pairs.append((fields[0], fields[1], float(fields[spec.score_column])))
        except (IndexError, ValueError):
            if n == 1 and not pairs:
                continue  # header
            raise ValueError(f"{path} line {n} is not in the {spec.title} format: expected word1, word2 and a "
                             f"numeric score in column {spec.score_column + 1}") from None
    if len(pairs) < 3:
        raise ValueError(f"{path} holds {len(pairs)} word pairs; a Spearman correlation needs at least 3")
    if len({score for _, _, score in pairs}) == 1:
        raise ValueError(f"{path}: all {len(pairs)} human scores are {pairs[0][2]:g}, so the similarity set has no "
                         f"variance and no Spearman correlation; check that column {spec.score_column + 1} holds "
                         f"the {spec.title} scores")
    return pairs


def load_similarity(directory, names) -> tuple[dict[str, list], dict[str, dict]]:
    if directory is None:
        raise ValueError("the similarity sets are read from their original files: pass --similarity_dir DIR holding "
                         "SimLex-999.txt, SimVerb-3500.txt, RG65.txt and WordSim-353's combined.tab")
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"similarity folder {directory} does not exist")
    data, records = {}, {}
    for name in names:
        path = find_file(directory, SETS[name])
        data[name] = read_pairs(path, SETS[name])
        records[name] = local_record([path], data[name])
    return data, records


def rank(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse]


def spearman(a, b) -> float:
    ra, rb = rank(np.asarray(a, dtype=np.float64)), rank(np.asarray(b, dtype=np.float64))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


@torch.no_grad()
def word_vectors(model, enc, words) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """Per word: the mean output embedding (d,) and, for Backpacks, the mean sense vectors (k, d)."""
    token_ids = {w: enc.encode_ordinary(" " + w) for w in words}
    unique = torch.tensor(sorted({t for ids in token_ids.values() for t in ids}), device=model.wte.weight.device)
    position = {int(t): i for i, t in enumerate(unique.tolist())}
    embeddings = model.output_embedding()[unique].float()
    senses = model.sense_network(model.wte(unique)).float() if model.config.is_backpack else None
    emb, sen = {}, ({} if senses is not None else None)
    for word, ids in token_ids.items():
        rows = torch.tensor([position[t] for t in ids], device=unique.device)
        emb[word] = embeddings[rows].mean(0)
        if senses is not None:
            sen[word] = senses[rows].mean(0)
    return emb, sen


def evaluate_similarity(model, enc, pairs, name: str = "similarity") -> dict:
    words = sorted({w for w1, w2, _ in pairs for w in (w1, w2)})
    emb, sen = word_vectors(model, enc, words)
    human = [score for _, _, score in pairs]
    cos = torch.nn.functional.cosine_similarity
    metrics = {"embedding": spearman(human, [float(cos(emb[a], emb[b], dim=0)) for a, b, _ in pairs])}
    if sen is not None:
        per_sense = torch.stack([cos(sen[a], sen[b], dim=-1) for a, b, _ in pairs]).cpu().numpy()  # (pairs, k)
        metrics["sense_min"] = spearman(human, per_sense.min(axis=1))
        rhos = [spearman(human, per_sense[:, l]) for l in range(per_sense.shape[1])]
        metrics.update({f"sense_{l}": rho for l, rho in enumerate(rhos)})
        if not all(np.isnan(rhos)):  # else refused below
            best = int(np.nanargmax(rhos))
            metrics.update({"best_sense": best, "best_sense_rho": rhos[best]})
    undefined = [k for k, v in metrics.items() if isinstance(v, float) and np.isnan(v)]
    if undefined:  # NaN is not JSON, and not a result
        raise ValueError(f"{name}: the model gives every pair the same cosine for {', '.join(undefined)}, so "
                         "Spearman's rho is undefined (are the weights all equal?); check the checkpoint")
    metrics["examples"] = len(pairs)
    return metrics
