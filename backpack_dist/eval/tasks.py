"""The one table of evaluation tasks: name -> how its data are read, how it is scored, the flag
that names its local data and a line of help. The runner's loops, `--tasks` parsing, the list of
valid names, the similarity sets and the `--tasks` help are all read from it.

A new benchmark is its module (a `load_x(path, limit)` and an `evaluate_x(scorer, enc, data)`,
like lambada.py) and one `Task` below: its data flag becomes a field of options.EvalOptions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .blimp import SUBTASKS, evaluate_blimp, load_blimp
from .debias import evaluate_debias, load_debias
from .knowledge_edit import evaluate_edit, load_edit
from .lambada import evaluate_lambada, load_lambada
from .owt import evaluate_owt, load_owt
from .similarity import SETS, evaluate_similarity, load_similarity
from .topic import evaluate_topic, load_topic
from .wikitext import evaluate_wikitext, load_wikitext


@dataclass(frozen=True)
class Loaded:
    """What a task is scored with: the model, its tokenizer, its export info and the Scorer."""
    model: Any
    enc: Any
    info: dict
    scorer: Any


@dataclass(frozen=True)
class Task:
    name: str
    """The name in --tasks and the key of its metrics in the results file."""
    help: str
    """One line for --help."""
    data_flag: str | None
    """The EvalOptions field naming its local data (None there: the hub, where `hub`); tasks may share one.
    None: the task's data are shipped in its module."""
    data_help: str
    """That flag's line in --help."""
    load: Callable[[Any, int | None, Loaded | None], tuple[Any, dict]]
    """(the data flag's value, --limit, the model where `needs_model` else None) -> (data, record
    for the results file); a bad file or flag is a ValueError that names it."""
    evaluate: Callable[[Loaded, Any], dict]
    """(the model, the loaded data) -> metrics."""
    group: str | None = None
    """A name in --tasks that stands for every task of its group (similarity: the four sets)."""
    hub: bool = True
    """Without its flag the data come from the Hugging Face hub; False: files only, read before the
    others, so a missing flag fails before any download."""
    needs_model: bool = False
    """Its data are checked against the model (tokenizer, context), so they are read after it loads."""
    default: bool = True
    """Part of the default --tasks."""

    def flag_value(self, options):
        """Its data flag's value in these EvalOptions (None for shipped data)."""
        return None if self.data_flag is None else getattr(options, self.data_flag)


SIMILARITY_DIR_HELP = ("Folder holding, in it or its subfolders, each set's original release (SimLex-999.txt, "
                       "SimVerb-3500.txt, RG65.txt, WordSim-353 combined.tab) or collection file "
                       "(EN-SIMLEX-999.txt, EN-SimVerb-3500.txt, EN-RG-65.txt, EN-WS-353-ALL.txt: word, word, score).")


def _similarity_task(name: str) -> Task:
    title = SETS[name].title
    return Task(name, f"{title}: Spearman's rho of human ratings and cosines", "similarity_dir", SIMILARITY_DIR_HELP,
                load=lambda directory, limit, _: _one(load_similarity(directory, [name]), name),
                evaluate=lambda m, pairs: evaluate_similarity(m.model, m.enc, pairs, name=name),
                group="similarity", hub=False)


def _one(loaded: tuple[dict, dict], name: str) -> tuple[Any, dict]:
    data, records = loaded
    return data[name], records[name]


TASKS: dict[str, Task] = {task.name: task for task in (
    Task("owt", "OpenWebText validation perplexity, the paper's split", "owt_val_dir",
         "Data-prep output holding val/ and dataset.json, instead of rebuilding OWT's split from the hub.",
         load=lambda directory, limit, m: load_owt(directory, m.enc, m.model.config.seq_len,
                                                   m.info.get("tokenizer_fingerprint"), limit,
                                                   m.model.config.vocab_size),
         evaluate=lambda m, samples: evaluate_owt(m.scorer, samples), needs_model=True),
    Task("lambada", "LAMBADA, OpenAI's test set: last-word accuracy and perplexity", "lambada_path",
         "OpenAI's lambada_test.jsonl, instead of the hub.",
         load=lambda path, limit, _: load_lambada(path, limit),
         evaluate=lambda m, texts: evaluate_lambada(m.scorer, m.enc, texts)),
    Task("wikitext", "WikiText raw test articles: word, token and byte perplexity", "wikitext_path",
         "wiki.test.raw, instead of the hub.",
         load=lambda path, limit, _: load_wikitext(path, limit),
         evaluate=lambda m, articles: evaluate_wikitext(m.scorer, m.enc, articles)),
    Task("blimp", f"BLiMP minimal pairs: accuracy, the mean over its {len(SUBTASKS)} sub-tasks", "blimp_dir",
         "Folder of BLiMP's UID.jsonl files, instead of the hub.",
         load=lambda directory, limit, _: load_blimp(directory, limit),
         evaluate=lambda m, data: evaluate_blimp(m.scorer, m.enc, data)),
    *(_similarity_task(name) for name in SETS),
    # The paper's section 6 (control experiments); their prompts and word lists are shipped.
    Task("debias", "he/she bias ratio over 40 professions, before and after zeroing the most gendered sense",
         None, "", load=load_debias, evaluate=lambda m, professions: evaluate_debias(m.model, m.enc, professions),
         group="control", hub=False, needs_model=True, default=False),
    Task("topic", "topic accuracy and fluency of generations, plain and with a topic's senses up-weighted",
         None, "", load=load_topic, evaluate=lambda m, pairs: evaluate_topic(m.model, m.enc, m.scorer, pairs),
         group="control", hub=False, needs_model=True, default=False),
    Task("edit", "knowledge edits (MacBook: Apple -> HP, ...): success, collateral change, locality",
         None, "", load=load_edit, evaluate=lambda m, facts: evaluate_edit(m.model, m.enc, facts),
         group="control", hub=False, needs_model=True, default=False),
)}

# Each data flag once, with its help, in table order: the EvalOptions fields after the common ones.
DATA_FLAGS: dict[str, str] = {}
for _task in (t for t in TASKS.values() if t.data_flag is not None):
    if DATA_FLAGS.setdefault(_task.data_flag, _task.data_help) != _task.data_help:
        raise TypeError(f"tasks sharing --{_task.data_flag} must give it the same help ({_task.name} does not)")

GROUPS: dict[str, list[str]] = {}
for _task in TASKS.values():
    if _task.group is not None:
        GROUPS.setdefault(_task.group, []).append(_task.name)
# What --tasks offers: each task, a group in place of its members (owt,lambada,wikitext,blimp,similarity).
TOP_LEVEL = list(dict.fromkeys(t.group or t.name for t in TASKS.values()))
NAMES = TOP_LEVEL + [name for members in GROUPS.values() for name in members]  # every valid name
DEFAULT_TASKS = ",".join(dict.fromkeys(t.group or t.name for t in TASKS.values() if t.default))


def parse_tasks(tasks) -> list[str]:
    """"owt,lambada" (or a sequence of names) -> task names in the order given, each once; a group
    ("similarity") means all its tasks."""
    names = tasks.split(",") if isinstance(tasks, str) else [str(t) for t in tasks]
    out = []
    for name in (n.strip() for n in names if n.strip()):
        for task in GROUPS.get(name, [name]):
            if task not in TASKS:
                raise ValueError(f"unknown task {task!r}: choose from {', '.join(NAMES)}")
            if task not in out:
                out.append(task)
    if not out:
        raise ValueError(f"no tasks given: pass --tasks with some of {', '.join(TOP_LEVEL)}")
    return out


def load_order(names) -> list[Task]:
    """The tasks in the order their data are read: files-only ones first (a missing flag fails
    before any download), then those with a hub default, in table order; model-checked ones last."""
    index = {name: i for i, name in enumerate(TASKS)}
    return sorted((TASKS[n] for n in names), key=lambda t: (t.needs_model, t.hub, index[t.name]))


def tasks_help() -> str:
    """The tasks section of --help: a line per name, with the flag that reads its data locally."""
    width = max(map(len, NAMES)) + 2
    lines = ["tasks (for --tasks; the flag in brackets reads a task's data from local files instead of",
             "the hub, or is required where the task has no hub default):"]
    for name in TOP_LEVEL:
        members = [TASKS[m] for m in GROUPS.get(name, [name])]
        if name in GROUPS:
            lines.append(f"  {name:{width}s}{','.join(GROUPS[name])}, each of which can be named alone")
        for task in members:
            indent = "    " if task.group else "  "
            flag = ("[shipped]" if task.data_flag is None else
                    f"[--{task.data_flag}{'' if task.hub else ', required'}]")
            lines.append(f"{indent}{task.name:{width + 2 - len(indent)}s}{task.help} {flag}")
    return "\n".join(lines)
