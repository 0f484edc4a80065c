"""BLiMP: 67 sub-tasks of minimal pairs. A pair is right when the grammatical sentence has the
higher total log-likelihood, each sentence scored on its own after the end-of-text token (no
context). Reported: accuracy per sub-task and the mean over sub-tasks (the paper's figure)."""

from __future__ import annotations

from pathlib import Path

from .sources import hub_record, load_hub, local_record, read_jsonl_objects, take

HUB_NAME = "nyu-mll/blimp"
# The 67 sub-tasks (BLiMP's UIDs; the original release names its files UID.jsonl).
SUBTASKS = (
    "adjunct_island", "anaphor_gender_agreement", "anaphor_number_agreement", "animate_subject_passive",
    "animate_subject_trans", "causative", "complex_NP_island", "coordinate_structure_constraint_complex_left_branch",
    "coordinate_structure_constraint_object_extraction", "determiner_noun_agreement_1",
    "determiner_noun_agreement_2", "determiner_noun_agreement_irregular_1", "determiner_noun_agreement_irregular_2",
    "determiner_noun_agreement_with_adj_2", "determiner_noun_agreement_with_adj_irregular_1",
    "determiner_noun_agreement_with_adj_irregular_2", "determiner_noun_agreement_with_adjective_1",
    "distractor_agreement_relational_noun", "distractor_agreement_relative_clause", "drop_argument",
    "ellipsis_n_bar_1", "ellipsis_n_bar_2", "existential_there_object_raising", "existential_there_quantifiers_1",
    "existential_there_quantifiers_2", "existential_there_subject_raising", "expletive_it_object_raising",
    "inchoative", "intransitive", "irregular_past_participle_adjectives", "irregular_past_participle_verbs",
    "irregular_plural_subject_verb_agreement_1", "irregular_plural_subject_verb_agreement_2",
    "left_branch_island_echo_question", "left_branch_island_simple_question", "matrix_question_npi_licensor_present",
    "npi_present_1", "npi_present_2", "only_npi_licensor_present", "only_npi_scope", "passive_1", "passive_2",
    "principle_A_c_command", "principle_A_case_1", "principle_A_case_2", "principle_A_domain_1",
    "principle_A_domain_2", "principle_A_domain_3", "principle_A_reconstruction",
    "regular_plural_subject_verb_agreement_1", "regular_plural_subject_verb_agreement_2",
    "sentential_negation_npi_licensor_present", "sentential_negation_npi_scope", "sentential_subject_island",
    "superlative_quantifiers_1", "superlative_quantifiers_2", "tough_vs_raising_1", "tough_vs_raising_2",
    "transitive", "wh_island", "wh_questions_object_gap", "wh_questions_subject_gap",
    "wh_questions_subject_gap_long_distance", "wh_vs_that_no_gap", "wh_vs_that_no_gap_long_distance",
    "wh_vs_that_with_gap", "wh_vs_that_with_gap_long_distance",
)


def read_subtask(path) -> list[dict]:
    path = Path(path)
    pairs = []
    fields = ("sentence_good", "sentence_bad")
    rows = read_jsonl_objects(  # an empty sentence could not be scored
        path, lambda row: all(isinstance(row.get(k), str) and row[k].strip() for k in fields),
        "is not BLiMP jsonl: each line must be a JSON object with non-empty string 'sentence_good' and "
        "'sentence_bad' (the original BLiMP release format)")
    for n, row in rows:
        if row.get("UID", path.stem) != path.stem:
            raise ValueError(f"{path} line {n} has UID {row['UID']!r} but the file is named for {path.stem!r}")
        pairs.append({"sentence_good": row["sentence_good"], "sentence_bad": row["sentence_bad"]})
    if not pairs:
        raise ValueError(f"{path} holds no BLiMP pairs")
    return pairs


def load_blimp(directory=None, limit=None) -> tuple[dict[str, list[dict]], dict]:
    """{sub-task: pairs} from a folder of the original UID.jsonl files, or from the hub.
    A folder may hold a subset of the 67 (the result records how many were scored)."""
    if directory is not None:
        directory = Path(directory)
        if not directory.is_dir():
            raise ValueError(f"BLiMP folder {directory} does not exist (pass the folder of the 67 original "
                             "BLiMP jsonl files)")
        files = sorted(directory.glob("*.jsonl"))
        unknown = [f.name for f in files if f.stem not in SUBTASKS]
        if unknown:
            raise ValueError(f"{directory} holds files that are not BLiMP sub-tasks: {unknown[:3]} "
                             f"(expected the original names, e.g. {SUBTASKS[0]}.jsonl)")
        if not files:
            raise ValueError(f"{directory} holds no BLiMP .jsonl files (expected e.g. {SUBTASKS[0]}.jsonl)")
        data = {f.stem: take(read_subtask(f), limit) for f in files}
        return data, local_record(files, [[uid, data[uid]] for uid in data])
    data = {}
    for uid in SUBTASKS:
        rows = load_hub(HUB_NAME, uid, "train", local_flag="--blimp_dir DIR")
        data[uid] = take(({"sentence_good": g, "sentence_bad": b}
                          for g, b in zip(rows["sentence_good"], rows["sentence_bad"], strict=True)), limit)
    return data, hub_record(HUB_NAME, "all 67 sub-tasks", "train", [[uid, data[uid]] for uid in data])


def evaluate_blimp(scorer, enc, data: dict[str, list[dict]]) -> dict:
    requests, owners = [], []
    for uid, pairs in data.items():
        for pair in pairs:
            requests += [([], enc.encode_ordinary(pair[key])) for key in ("sentence_good", "sentence_bad")]
            owners.append(uid)
    scores = [ll for ll, _ in scorer.loglikelihoods(requests, desc="blimp")]
    correct: dict[str, list[bool]] = {uid: [] for uid in data}
    for p, uid in enumerate(owners):
        correct[uid].append(scores[2 * p] > scores[2 * p + 1])
    per_task = {uid: sum(c) / len(c) for uid, c in correct.items()}
    metrics = {"acc": sum(per_task.values()) / len(per_task), "subtasks": len(per_task), "examples": len(owners)}
    metrics.update({f"acc/{uid}": acc for uid, acc in sorted(per_task.items())})
    return metrics
