"""Verifiable tasks for test-time-compute studies: generators, checkers, held-out split, TFDS builder.

    p = generate_problem("reversed_addition", 3, np.random.default_rng(0))
    p.prompt, p.answer, p.text            # "507+64=", "175", "507+64=175\\n"
    exact_check(p, "175\\n...")           # True: the completion up to its first newline == answer
    weak_check(p, "185\\n")               # True: an imperfect checker (see below)
    prepare("verifiable_tasks/reversed_addition", data_dir)   # TFDS ArrayRecord, no download
    held_out_problems("reversed_addition", 2, 100)            # held-out prompts, by hash

Families (a document is one problem, ``prompt + answer + "\\n"``; a model is asked the prompt
exactly as it starts a training document, at position 0 of its own segment):

* ``reversed_addition`` (Lee et al. 2023, "Teaching Arithmetic to Small Transformers",
  arXiv:2307.03381, the "reverse" output format: the sum is written least-significant digit
  first, which small transformers learn far more easily than plain order). Difficulty d: one
  operand has exactly d digits (d = 1: 0-9), the other a uniform 1..d digits, order random.
  ``"507+64="`` -> ``"175"`` (571 reversed).
  Weak checker: the answer's length and its first digit (the units digit, (a + b) mod 10) are
  right; the other digits are not checked.
* ``sort_digits`` (a list-manipulation task, not arithmetic): sort a string of d + 2 digits in
  ascending order. ``"sort 3152="`` -> ``"1235"``. Weak checker: the output is d + 2 digits in
  non-decreasing order; whether they are the input's digits is not checked.

Both weak checkers accept every exactly correct answer (exact => weak), so the false-positive
rate of the weak checker is FP / negatives = (c_weak - c) / (n - c) over samples
(``weak_false_positive_rate``).

Held out by hash: a problem is held out when sha256("family:prompt") mod 10_000 < 1_000 (10 %
of every family's problem space, the same on every machine). Train documents never contain a
held-out prompt; the ``test`` split holds only held-out problems.

TFDS dataset ``verifiable_tasks`` (ArrayRecord, built locally like ``corpus.python_stdlib``;
features text, prompt, answer, family, difficulty), configs:
  * ``reversed_addition``: difficulties 1-4, 200,000 train documents (equal per difficulty),
    test = up to 250 held-out problems per difficulty (1-digit addition has 100 problems, 10
    of them held out);
  * ``sort_digits``: difficulties 1-4 (3-6 digits), same sizes;
  * ``small``: reversed_addition, difficulties 1-2, 20,000 train documents, 50 test per
    difficulty (tests).

Training on a mixture with the text corpus: ``data.mixed_train_rows`` packs every source into rows
separately and mixes the ROWS with ``grain.IterDataset.mix`` (weights = fractions of training
tokens, since rows have equal length), see ``parse_mixture``.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import random
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from experiments.harness import corpus

DATASET_NAME = "verifiable_tasks"
FAMILIES = ("reversed_addition", "sort_digits")
TRAIN_SPLIT, TEST_SPLIT = "train", "test"
HELD_OUT_PER_10K = 1_000  # 10 % of each family's problems are held out
TERMINATOR = "\n"


@dataclasses.dataclass(frozen=True)
class Problem:
    """One task instance: the model sees ``prompt`` and must write ``answer`` then a newline."""

    family: str
    difficulty: int
    prompt: str
    answer: str

    @property
    def text(self) -> str:
        """The training document: prompt, answer, newline."""
        return self.prompt + self.answer + TERMINATOR

    @property
    def id(self) -> str:
        """A stable id: ``family:prompt`` (unique within a family)."""
        return f"{self.family}:{self.prompt}"


def _check_family(family: str, difficulty: int) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown task family {family!r}; known: {FAMILIES}")
    if isinstance(difficulty, bool) or int(difficulty) != difficulty or not 1 <= difficulty <= 12:
        raise ValueError(f"{family}: difficulty must be an integer in [1, 12], got {difficulty!r}")


def _operand(rng: np.random.Generator, digits: int) -> int:
    if digits == 1:
        return int(rng.integers(0, 10))
    return int(rng.integers(10 ** (digits - 1), 10**digits))


def generate_problem(family: str, difficulty: int, rng: np.random.Generator) -> Problem:
    """One random problem of ``family`` at ``difficulty`` (see the module docstring)."""
    _check_family(family, difficulty)
    if family == "reversed_addition":
        a = _operand(rng, difficulty)
        b = _operand(rng, int(rng.integers(1, difficulty + 1)))
        if rng.integers(2):
            a, b = b, a
        return Problem(family, difficulty, f"{a}+{b}=", str(a + b)[::-1])
    digits = "".join(str(d) for d in rng.integers(0, 10, size=difficulty + 2))
    return Problem(family, difficulty, f"sort {digits}=", "".join(sorted(digits)))


def completion_answer(completion: str) -> str | None:
    """The answer a completion gives: its text before the first newline; None without a newline
    (a completion that never ends is not an answer)."""
    head, sep, _ = completion.partition(TERMINATOR)
    return head if sep else None


def exact_check(problem: Problem, completion: str) -> bool:
    """True when the completion's answer (text before the first newline) equals the answer."""
    return completion_answer(completion) == problem.answer


def weak_check(problem: Problem, completion: str) -> bool:
    """The imperfect checker (accepts every exact answer, and some wrong ones; module docstring)."""
    given = completion_answer(completion)
    if given is None or len(given) != len(problem.answer) or not given.isdigit():
        return False
    if problem.family == "reversed_addition":
        return given[0] == problem.answer[0]
    return list(given) == sorted(given)


def weak_false_positive_rate(rows: Sequence[dict]) -> float:
    """Fraction of wrong samples that the weak checker accepts: sum(c_weak - c) / sum(n - c), from
    rows with n, c, c_weak (``experiments.measures.samples.sample_counts``); NaN when no sample is wrong."""
    wrong = sum(r["n"] - r["c"] for r in rows)
    false_pos = sum(r["c_weak"] - r["c"] for r in rows)
    return float(false_pos / wrong) if wrong else float("nan")


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def is_held_out(problem: Problem) -> bool:
    """sha256("family:prompt") mod 10_000 < 1_000: 10 % of every family's problems."""
    return _hash(problem.id) % 10_000 < HELD_OUT_PER_10K


def _seed(*parts) -> int:
    return _hash(":".join(str(p) for p in parts)) % 2**63


def held_out_problems(family: str, difficulty: int, n: int, seed: int = 0) -> list[Problem]:
    """Up to ``n`` distinct held-out problems of one family and difficulty, deterministic in
    ``seed`` (fewer when the held-out part of the problem space is smaller, e.g. 1-digit sums)."""
    _check_family(family, difficulty)
    rng = np.random.default_rng(_seed("held_out", family, difficulty, seed))
    found: dict[str, Problem] = {}
    for _ in range(200 * n + 2_000):
        p = generate_problem(family, difficulty, rng)
        if p.prompt not in found and is_held_out(p):
            found[p.prompt] = p
            if len(found) == n:
                break
    return list(found.values())


class _PyRng:
    """The ``integers`` subset of ``np.random.Generator`` on ``random.Random``: seeding one per
    document costs ~10 us, a numpy Generator ~150 us."""

    def __init__(self, seed: int):
        self._random = random.Random(seed)

    def integers(self, low, high=None, size=None):
        low, high = (0, low) if high is None else (low, high)
        if size is None:
            return self._random.randrange(low, high)
        return [self._random.randrange(low, high) for _ in range(size)]


def train_problem(family: str, difficulties: Sequence[int], index: int, seed: int = 0) -> Problem:
    """Train document ``index``: difficulty ``difficulties[index % len]``, drawn with a generator
    seeded by sha256(family, difficulties, seed, index), redrawn while held out. Random access:
    the same index gives the same problem on every machine (``TaskSource``)."""
    rng = _PyRng(_seed("train", family, tuple(difficulties), seed, index))
    difficulty = difficulties[index % len(difficulties)]
    while True:
        p = generate_problem(family, difficulty, rng)
        if not is_held_out(p):
            return p


def train_problems(family: str, difficulties: Sequence[int], n: int, seed: int = 0) -> Iterator[Problem]:
    """Train documents 0 .. n-1 (``train_problem``; none held out, repeats allowed)."""
    return (train_problem(family, difficulties, i, seed) for i in range(n))


def _record(p: Problem) -> dict:
    return {"text": p.text.encode(), "prompt": p.prompt.encode(), "answer": p.answer.encode(),
            "family": p.family.encode(), "difficulty": np.int32(p.difficulty)}


class TaskSource:
    """Random-access train split of a task config, computed instead of read: record i equals
    record i of the TFDS train split (the builder writes ``train_problem(i)`` in index order,
    unshuffled), as ``tfds`` returns it (bytes features). Reading a 10-token document through
    ``tfds.data_source`` costs ~3.7 ms (feature decoding per record, measured on the shared
    2-core CPU), more than a training step needs for a whole batch; computing it costs ~0.03 ms."""

    def __init__(self, config: "TaskConfig"):
        self.family, self.difficulties = config.family, tuple(config.difficulties)
        self._len = int(config.train_examples)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index) -> dict:
        index = int(index)
        if not 0 <= index < self._len:
            raise IndexError(f"TaskSource index {index} outside [0, {self._len})")
        return _record(train_problem(self.family, self.difficulties, index))


# ----------------------------------------------------------------------------- TFDS builder


@dataclasses.dataclass
class TaskConfig(tfds.core.BuilderConfig):
    family: str = "reversed_addition"
    difficulties: tuple[int, ...] = (1, 2, 3, 4)
    train_examples: int = 200_000
    test_per_difficulty: int = 250


class VerifiableTasks(corpus.LocalBuildMessages, tfds.core.GeneratorBasedBuilder):
    """TFDS builder: generated task documents (see module docstring); nothing to download."""

    SOURCE = "generated task documents, no download"

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        TaskConfig(name="reversed_addition", description="Reversed-answer addition, 1-4 digits."),
        TaskConfig(name="sort_digits", family="sort_digits", description="Sort 3-6 digits."),
        TaskConfig(name="small", difficulties=(1, 2), train_examples=20_000, test_per_difficulty=50,
                   description="Reversed addition, 1-2 digits, for tests."),
    ]
    DEFAULT_CONFIG_NAME = "reversed_addition"
    code_path = epath.Path(__file__)  # see corpus.PythonStdlib.code_path

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Generated verifiable problems: one document per problem, prompt+answer+newline.",
            features=tfds.features.FeaturesDict({
                "text": tfds.features.Text(), "prompt": tfds.features.Text(),
                "answer": tfds.features.Text(), "family": tfds.features.Text(),
                "difficulty": tfds.features.Scalar(np.int32)}),
            disable_shuffling=True,  # records in index order, so TaskSource[i] == record i
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {TRAIN_SPLIT: self._generate_examples(TRAIN_SPLIT), TEST_SPLIT: self._generate_examples(TEST_SPLIT)}

    def _generate_examples(self, split: str):
        c = self.builder_config
        if split == TRAIN_SPLIT:
            problems = train_problems(c.family, c.difficulties, c.train_examples)
        else:
            problems = (p for d in c.difficulties for p in held_out_problems(c.family, d, c.test_per_difficulty))
        for i, p in enumerate(problems):
            yield i, {"text": p.text, "prompt": p.prompt, "answer": p.answer, "family": p.family,
                      "difficulty": p.difficulty}


def _config_name(name: str) -> str:
    return corpus.builder_config_name(name, VerifiableTasks, "a task dataset")


def is_task_dataset(name: str) -> bool:
    return name.partition("/")[0] == DATASET_NAME


def prepare(name: str = DATASET_NAME, data_dir: str | os.PathLike | None = None) -> VerifiableTasks:
    """Builds ``verifiable_tasks[/config]`` into the cache once (process-safe, as corpus.prepare)."""
    config = _config_name(name)
    root = corpus.default_data_dir(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{DATASET_NAME}-{config}.lock", "w") as lock, corpus.quiet_tfds():
        fcntl.flock(lock, fcntl.LOCK_EX)
        builder = VerifiableTasks(config=config, data_dir=str(root), file_format="array_record")
        if not builder.is_prepared():
            builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
        builder = VerifiableTasks(config=config, data_dir=str(root), file_format="array_record")
    return builder


def _decode(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def load_source(name: str, split: str, data_dir=None):
    """A random-access source of one split (``len`` / ``[i]`` -> record dict, bytes features):
    ``TaskSource`` for the train split, the TFDS data source otherwise. Builds on first use."""
    builder = prepare(name, data_dir)
    if split not in builder.info.splits:
        raise ValueError(f"unknown split {split!r} of {name}; known: {sorted(builder.info.splits.keys())}")
    if split == TRAIN_SPLIT:
        return TaskSource(builder.builder_config)
    return builder.as_data_source(split=split)


def load_problems(name: str, split: str = TEST_SPLIT, data_dir=None) -> list[Problem]:
    """The problems of a split of a task dataset (built on first use), in stored order."""
    source = load_source(name, split, data_dir)
    records = (source.__getitems__(list(range(len(source)))) if hasattr(source, "__getitems__")
               else [source[i] for i in range(len(source))])
    return [Problem(_decode(r["family"]), int(r["difficulty"]), _decode(r["prompt"]), _decode(r["answer"]))
            for r in records]


# ----------------------------------------------------------------------------- mixtures


def parse_mixture(entries: Sequence[str]) -> list[tuple[str, float]]:
    """``("verifiable_tasks/reversed_addition:0.3", ...)`` -> [(dataset, weight)], weights in (0, 1)
    summing to < 1 (the rest goes to ``DataConfig.dataset``)."""
    out = []
    for entry in entries:
        name, sep, weight = str(entry).rpartition(":")
        try:
            w = float(weight)
        except ValueError:
            w = float("nan")
        if not sep or not name or not 0 < w < 1:
            raise ValueError(f"mixture entry {entry!r}: expected DATASET:WEIGHT with 0 < WEIGHT < 1")
        out.append((name, w))
    total = sum(w for _, w in out)
    if not total < 1:
        raise ValueError(f"mixture weights sum to {total} >= 1; the base dataset needs a share")
    return out
