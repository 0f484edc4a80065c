"""Lexical similarity: Spearman correlation between human ratings and model cosines.

For every model: cosine of output embeddings E[w]. For Backpacks also, for each sense index l,
Sim_l(w, w') = cosine(C(w)_l, C(w')_l), and Sim_min = min over l. Words are prefixed by a space;
a word of several tokens is the mean of its tokens' vectors. The four sets are read from the files
users hold, found in --similarity_dir or its subfolders: the original releases, or the widely
copied collection of one `EN-*.txt` file per set (word, word, score)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .sources import local_record


@dataclass(frozen=True)
class Layout:
    """One way a set is distributed: its file names (matched case-insensitively) and columns."""
    names: tuple[str, ...]
    score_column: int  # 0-based
    header: bool  # the first line may be a header (the original releases differ in this)


def collection(name: str) -> Layout:
    # The collection format (mfaruqui/eval-word-vectors, wordvectors.org and their many copies):
    # one file per set, word<TAB>word<TAB>score, no header.
    return Layout((name,), 2, header=False)


@dataclass(frozen=True)
class SimilaritySet:
    title: str
    layouts: tuple[Layout, ...]  # searched in this order: the original release first

    def file_names(self) -> list[str]:
        return [name for layout in self.layouts for name in layout.names]


# The one table of what each set's file is called and how it is read.
SETS = {
    "simlex": SimilaritySet("SimLex-999", (Layout(("SimLex-999.txt", "SimLex999.txt"), 3, header=True),
                                           collection("EN-SIMLEX-999.txt"))),
    "simverb": SimilaritySet("SimVerb-3500", (Layout(("SimVerb-3500.txt", "SimVerb3500.txt"), 3, header=True),
                                              collection("EN-SimVerb-3500.txt"))),
    "rg65": SimilaritySet("RG-65", (Layout(("RG65.txt", "RG-65.txt", "RG65.csv", "RG-65.csv", "RG65.tsv"), 2,
                                           header=True),
                                    collection("EN-RG-65.txt"))),
    "ws353": SimilaritySet("WordSim-353", (Layout(("combined.tab", "combined.csv", "wordsim353.tsv",
                                                   "wordsim353.txt", "ws353.txt", "ws353.tsv"), 2, header=True),
                                           collection("EN-WS-353-ALL.txt"))),  # -SIM and -REL are subsets
}


def find_files(directory: Path) -> dict[str, list[Path]]:
    """Lower-case file name -> the files of that name (of any set) in directory and its subfolders,
    in sorted order. Linked folders are followed (each real folder once)."""
    wanted = {name.lower() for spec in SETS.values() for name in spec.file_names()}
    found, seen = {}, set()
    for root, dirs, names in os.walk(directory, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link back up the tree
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        for name in sorted(names):
            if name.lower() in wanted and os.path.isfile(os.path.join(root, name)):
                found.setdefault(name.lower(), []).append(Path(root, name))
    return found


def find_file(directory: Path, files: dict[str, list[Path]], name: str) -> tuple[Path, Layout]:
    spec = SETS[name]
    for layout in spec.layouts:
        for file_name in layout.names:
            paths = files.get(file_name.lower(), [])
            if len({p.read_bytes() for p in paths}) > 1:  # copies of one file are fine; which of two differing?
                raise ValueError(f"{directory} holds {len(paths)} different {file_name} files "
                                 f"({', '.join(map(str, paths))}); remove the extra ones or pass --similarity_dir "
                                 "the folder of the one to use")
            if paths:
                return paths[0], layout
    others = ",".join(n for n in SETS if n != name)
    raise ValueError(f"no {spec.title} file in {directory} or its subfolders (looked for "
                     f"{', '.join(spec.file_names())}); add one, or leave {name} out of --tasks "
                     f"(e.g. --tasks {others})")


def _fields(line: str) -> list[str]:
    for sep in ("\t", ";", ","):
        if sep in line:
            return [f.strip() for f in line.split(sep)]
    return line.split()


def read_pairs(path: Path, layout: Layout, title: str) -> list[tuple[str, str, float]]:
    """(word1, word2, human score) from one file of a set."""
    pairs = []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = _fields(line)
        try:
            pair = (fields[0], fields[1], float(fields[layout.score_column]))
        except (IndexError, ValueError):
            pair = None
        if pair is None or not (pair[0] and pair[1] and math.isfinite(pair[2])):
            if layout.header and n == 1:
                continue
            raise ValueError(f"{path} line {n} is not in the {title} format: expected word1, word2 and a numeric "
                             f"score in column {layout.score_column + 1}; fix or remove the line")
        pairs.append(pair)
    if len(pairs) < 3:
        raise ValueError(f"{path} holds {len(pairs)} word pairs; a Spearman correlation needs at least 3")
    if len({score for _, _, score in pairs}) == 1:
        raise ValueError(f"{path}: all {len(pairs)} human scores are {pairs[0][2]:g}, so the similarity set has no "
                         f"variance and no Spearman correlation; check that column {layout.score_column + 1} holds "
                         f"the {title} scores")
    return pairs


def load_similarity(directory, names) -> tuple[dict[str, list], dict[str, dict]]:
    if directory is None:
        raise ValueError("the similarity sets are read from files: pass --similarity_dir DIR holding, in it or its "
                         "subfolders, the original releases (SimLex-999.txt, SimVerb-3500.txt, RG65.txt, WordSim-353's "
                         "combined.tab) or the collection's EN-SIMLEX-999.txt, EN-SimVerb-3500.txt, EN-RG-65.txt, "
                         "EN-WS-353-ALL.txt")
    directory = Path(directory)
    if not directory.is_dir():
        what = "is a file" if directory.exists() else "does not exist"
        raise ValueError(f"similarity folder {directory} {what}; pass --similarity_dir the folder holding the sets")
    files = find_files(directory)
    data, records = {}, {}
    for name in names:
        path, layout = find_file(directory, files, name)
        data[name] = read_pairs(path, layout, SETS[name].title)
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
