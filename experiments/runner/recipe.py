"""The shared run recipe: every study's declaration subclasses `Recipe`, which turns a target size
and a token count (or a FLOP budget) into one run's `Config`, so a study file declares only what
differs (which sizes and budgets, what to measure, which report).

    @dataclasses.dataclass(frozen=True)
    class Study(Recipe):
        name: str = "my_study"
        sizes: tuple[float, ...] = (1e4, 3e4)

        def runs(self):
            for n in self.sizes:
                yield self.run(n, tokens=20 * n, labels={"tokens_per_param": 20})

What the recipe owns (each a field of the declaration, so ``--set`` reaches it):

* the shape rule: `model` (`models.shapes.config_for_params` matching the ``count`` of the
  ``flop_convention``: non-embedding parameters under "6N_nonembed", else all), with the base
  model's numerics (dtype, remat, scan, attention) and ``tie_embeddings``, ``min_heads``;
* the batch rule ``rows_per_step`` (an integer, or the name of a rule in `BATCH_RULES`: tokens per
  step, divided by seq_len and rounded to whole sequences), rounded up to ``batch_multiple``
  (`experiments.runner.study.fit_batch_to_mesh` raises it to the mesh's batch divisor);
* the learning-rate rule: ``lr_scale`` x ``lr`` (a number, the name of a rule in `LR_RULES`, or
  a fitted-law file, ``--set lr=runs/hp/fits/lr_opt.json --set lr_scale=1``); a rule is any
  callable ``f(N, D, C)`` of non-embedding parameters N, training tokens D and training FLOPs C
  under the study's convention (`as_rule`, `law_rule`); ``rows_per_step`` takes the same (a
  rule's value is tokens per step);
* steps and tokens: the nearest whole number of steps for the budget (`design.steps_for_budget`)
  or for the tokens; tokens are then steps x rows x seq_len. Runs under ``min_steps`` steps are
  dropped from the sweep (``short_runs="drop"``, logged) or lengthened to ``min_steps``
  (``short_runs="extend"``);
* seeds: seed s sets ``train.seed = s`` and ``data.shuffle_seed = base.data.shuffle_seed + s``;
* the base `Config` (`BASE`; a study changes a few fields with `base_config`), the mesh, and the
  ``analyze`` switch; presets are functions returning `derive(Study(), ...)`;
* the command line: `command(PRESETS, __doc__)` is a study file's ``main`` (``--workdir``,
  ``--preset``, ``--set``, ``--aot``, multi-process flags; `experiments.runner.study.main`).

A study file's smoke run for the tests is the module constant ``SMOKE = {"fixture": ...,
"command": ..., "workdir": ...}`` (tests/conftest.py finds it in every ``experiments/studies/``
file without importing them).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from experiments.harness.config import Config, TrainConfig, deepseek_batch_tokens, deepseek_lr
from experiments.harness.data import DataConfig
from experiments.runner.design import steps_for_budget
from experiments.runner.runs import Run
from models.transformer import ModelConfig

log = logging.getLogger(__name__)

# (N non-embedding parameters, D training tokens, C training FLOPs) -> a number
Rule = Callable[[float, float, float], float]

# DeepSeek LLM (Bi et al. 2024, Eq. 1); both take C = 6 N_nonembed D themselves
LR_RULES: dict[str, Rule] = {"deepseek": lambda n, d, c: deepseek_lr(n, d)}
BATCH_RULES: dict[str, Rule] = {"deepseek": lambda n, d, c: deepseek_batch_tokens(n, d)}

# every study's base run: byte-level model at seq 64, cosine decayed to 1%, AdamW with decay 0.1
BASE = Config(
    model=ModelConfig(vocab_size=256, max_seq_len=64),
    data=DataConfig(seq_len=64, eval_sequences=512),
    train=TrainConfig(warmup=0.05, schedule="cosine", min_lr_ratio=0.01, weight_decay=0.1,
                      divergence_ratio=10.0, log_every=50, checkpoint_every=500, eval_batch_size=64),
)


def derive(obj, **changes):
    """`dataclasses.replace` that reaches inside: a dict given for a dataclass field changes only
    those fields of it. ``derive(study, base={"data": {"seq_len": 512}}, lr_scale=1.0)``."""
    updates = {}
    for name, value in changes.items():
        current = getattr(obj, name)
        if isinstance(value, Mapping) and dataclasses.is_dataclass(current):
            value = derive(current, **value)
        updates[name] = value
    return dataclasses.replace(obj, **updates)


def base_config(**sections) -> Config:
    """`BASE` with some fields changed: ``base_config(data={"eval_sequences": 1024})``."""
    return derive(BASE, **sections)


# what a rule's value is, for the fitted-law files a field accepts (`law_rule`)
RULE_QUANTITIES = {"lr": "learning_rate", "rows_per_step": "batch_tokens"}


def as_rule(value, rules: Mapping[str, Rule], what: str) -> Rule:
    """A rule from a declaration's field: a number (a constant), the name of a rule in ``rules``,
    a fitted-law file (``--set lr=runs/hp/fits/lr_optimum.json``, `law_rule`) or a callable
    ``f(N, D, C)``."""
    if callable(value):
        return value
    if isinstance(value, str):
        if value in rules:
            return rules[value]
        if value.endswith(".json") or "://" in value:
            return law_rule(value, what)
        raise ValueError(f"{what}={value!r}: unknown rule; rules: {sorted(rules)}, a fitted-law .json file "
                         "or a number")
    constant = float(value)
    return lambda n, d, c: constant


def law_rule(path: str, what: str = "rule") -> Rule:
    """A fitted law (`scaling.load`) as a rule: its covariates must be among N (non-embedding
    parameters), D (tokens), C (training FLOPs); the rule is its prediction. Extrapolation
    warnings are silenced (a rule is used beyond its fit on purpose).

    What the file predicts: its provenance's ``quantity`` ("learning_rate" or "batch_tokens",
    `scaling.analysis.hyperparameters.describe`) must be the field's (``lr``: a learning rate;
    ``rows_per_step``: tokens per step), and a one-covariate law's ``x`` ("N", "D" or "C") says what
    x is. Files without these (written before them, or by hand) are taken as they were: x is C,
    and any law is accepted except one whose target is a loss."""
    import warnings

    import numpy as np
    from etils import epath

    import scaling

    if not epath.Path(path).exists():
        raise ValueError(f"{what}={path!r}: no such fitted-law file")
    law = scaling.load(path)
    provenance = law.provenance or {}
    field = what.rsplit(".", 1)[-1]
    expected = RULE_QUANTITIES.get(field)
    quantity = provenance.get("quantity")
    target = (law.data or {}).get("target") or law.law.target
    if expected is not None and quantity is not None and quantity != expected:
        raise ValueError(f"{what}={path!r}: this file is a fitted {quantity} law ({law.law.name}), not a "
                         f"{expected} law")
    if expected is not None and quantity is None and "loss" in str(target).lower():
        raise ValueError(f"{what}={path!r}: this file is a fitted loss law ({law.law.name}, target "
                         f"{target!r}), not a {expected} law")
    slots = {"N": 0, "D": 1, "C": 2, "x": {"N": 0, "D": 1, "C": 2}.get(provenance.get("x"), 2)}
    covariates = tuple(law.law.covariates)
    if any(c not in slots for c in covariates):
        raise ValueError(f"{what}={path!r}: the law {law.law.name!r} takes {covariates}; a rule's inputs are "
                         "N, D and C (or x = C)")

    def rule(n, d, c):
        values = (n, d, c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            out = law.predict(**{k: np.array([float(values[slots[k]])]) for k in covariates})
        return float(np.asarray(out).reshape(-1)[0])

    return rule


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The fields every study shares (see the module docstring); a study subclasses it, adds its
    own fields and defines `runs` (and `measures`, `analysis`, `rung` when it has them).

    name: the study's name (outputs, logs); flop_convention: how budgets count FLOPs
      (`scaling.flops.CONVENTIONS`) and which parameter count the shape rule matches.
    seeds, tie_embeddings, min_heads, rows_per_step, batch_multiple, lr, lr_scale, min_steps,
      short_runs, base, mesh: the recipe above. analyze: run the analysis after training.
    """

    name: str = "study"
    flop_convention: str = "6N"
    seeds: tuple[int, ...] = (0,)
    tie_embeddings: bool = False
    min_heads: int = 2
    rows_per_step: int | str = 16
    batch_multiple: int = 1
    lr: float | str = "deepseek"
    lr_scale: float = 0.5
    min_steps: int = 20
    short_runs: str = "drop"
    base: Config = BASE
    mesh: str = ""
    analyze: bool = True

    def __post_init__(self):
        from scaling import flops as sflops

        if self.flop_convention not in sflops.CONVENTIONS:
            raise ValueError(f"Study.flop_convention={self.flop_convention!r}; choose one of "
                             f"{sflops.CONVENTIONS}")
        if not self.seeds:
            raise ValueError("Study.seeds: give at least one seed")
        if self.batch_multiple < 1:
            raise ValueError(f"Study.batch_multiple must be >= 1, got {self.batch_multiple}")
        if self.short_runs not in ("drop", "extend"):
            raise ValueError(f"Study.short_runs={self.short_runs!r}: 'drop' or 'extend'")
        as_rule(self.lr, LR_RULES, "Study.lr")
        as_rule(self.rows_per_step, BATCH_RULES, "Study.rows_per_step")

    # ------------------------------------------------------------------------- what a study defines

    def runs(self) -> Iterable[Run]:
        """The runs to train, in order (a study defines this)."""
        raise NotImplementedError(f"{type(self).__name__} must define runs()")

    def measures(self) -> Sequence:
        """Measure stages (`experiments.runner.measure.Measure`) after training; none by default."""
        return ()

    def analysis(self) -> Callable | None:
        """The analyze stage, ``f(StudyContext) -> {"fitted", "report", ...}``; none by default."""
        return None

    def rung(self):
        """The ladder's next rung (`experiments.runner.study.Rung`); none by default."""
        return None

    def stages(self) -> dict:
        """What `experiments.runner.study.run_study` runs for this declaration."""
        return {"runs": self.runs(), "flop_convention": self.flop_convention,
                "measures": list(self.measures()), "rung": self.rung(),
                "analyze": self.analysis() if self.analyze else None}

    # ------------------------------------------------------------------------- the recipe

    @property
    def count(self) -> str:
        """Which parameter count N is: "nonembedding" under "6N_nonembed", else "total"."""
        return "nonembedding" if self.flop_convention == "6N_nonembed" else "total"

    def model(self, n_target: float, count: str | None = None) -> ModelConfig:
        """The shape rule's model nearest ``n_target`` parameters (of ``count``, default `count`)."""
        from models.shapes import config_for_params

        base = self.base.model
        return config_for_params(
            n_target, vocab_size=base.vocab_size, count=count or self.count,
            tie_embeddings=self.tie_embeddings, min_heads=self.min_heads,
            max_seq_len=self.base.data.seq_len, dtype=base.dtype, remat=base.remat,
            scan_layers=base.scan_layers, attention_impl=base.attention_impl)

    def flops_per_token(self, model: ModelConfig, convention: str | None = None) -> float:
        from models.transformer import shape_dict
        from scaling import flops as sflops

        return sflops.flops_per_token(shape_dict(model), self.base.data.seq_len,
                                      convention or self.flop_convention)

    def rows(self, n_params_nonembedding: float, tokens: float, flops: float) -> int:
        """Sequences per step from the batch rule, rounded up to ``batch_multiple``."""
        if isinstance(self.rows_per_step, int):
            rows = self.rows_per_step
        else:
            per_step = as_rule(self.rows_per_step, BATCH_RULES, "rows_per_step")(
                n_params_nonembedding, tokens, flops)
            rows = max(1, round(per_step / self.base.data.seq_len))
        return -(-rows // self.batch_multiple) * self.batch_multiple

    def learning_rate(self, n_params_nonembedding: float, tokens: float, flops: float) -> float:
        """Peak learning rate: ``lr_scale`` x the learning-rate rule."""
        return self.lr_scale * as_rule(self.lr, LR_RULES, "lr")(n_params_nonembedding, tokens, flops)

    def config(self, model: ModelConfig, *, budget: float | None = None, tokens: float | None = None,
               seed: int = 0, **sections: Mapping[str, Any]) -> Config:
        """One run's Config: ``model`` trained on ``budget`` FLOPs (the study's convention) or on
        ``tokens`` tokens, with the batch and learning-rate rules and the seed; ``sections``
        (``data={...}``, ``train={...}``) change the base's fields for this run only."""
        from models.transformer import param_counts

        if (budget is None) == (tokens is None):
            raise ValueError("Recipe.config: give exactly one of budget and tokens")
        n_ne = param_counts(model)["nonembedding"]
        per_token = self.flops_per_token(model)
        seq_len = self.base.data.seq_len
        target = budget / per_token if tokens is None else tokens
        rows = self.rows(n_ne, target, per_token * target)
        if tokens is None:
            steps = steps_for_budget(budget, per_token, rows * seq_len)
        else:
            steps = max(1, round(tokens / (rows * seq_len)))
        if self.short_runs == "extend":
            steps = max(self.min_steps, steps)
        tokens = steps * rows * seq_len
        base = derive(self.base, **sections) if sections else self.base
        train = dataclasses.replace(base.train, tokens=tokens, batch_size=rows, seed=seed,
                                    lr=self.learning_rate(n_ne, tokens, per_token * tokens))
        data = dataclasses.replace(base.data, shuffle_seed=base.data.shuffle_seed + seed)
        return dataclasses.replace(base, model=model, data=data, train=train, mesh=self.mesh)

    def run(self, size: float | ModelConfig, *, budget: float | None = None, tokens: float | None = None,
            tokens_per_param: float | None = None, seed: int = 0, labels: Mapping[str, Any] | None = None,
            keep_short: bool = False, **sections) -> Run | None:
        """`config` as a `Run` (``size``: a target parameter count or a model; the length: a
        ``budget``, ``tokens``, or ``tokens_per_param`` x the model's N of `count`); None when it
        would train fewer than ``min_steps`` steps (unless ``keep_short``). A run given tokens gets
        the budget C = FLOPs per token (the study's convention) x its tokens."""
        from models.transformer import param_counts

        model = size if isinstance(size, ModelConfig) else self.model(size)
        if tokens_per_param is not None:
            tokens = tokens_per_param * param_counts(model)[self.count]
        cfg = self.config(model, budget=budget, tokens=tokens, seed=seed, **sections)
        steps = steps_of(cfg)
        if steps < self.min_steps and not keep_short:
            log.warning("%s: %s would train only %d steps (< min_steps %d); left out", self.name,
                        _describe(model, budget, tokens), steps, self.min_steps)
            return None
        if budget is None:
            budget = self.flops_per_token(model) * cfg.train.tokens
        return Run(budget=budget, config=cfg, labels=dict(labels or {}))


def steps_of(cfg: Config) -> int:
    """Optimizer steps of a run's Config."""
    return cfg.train.tokens // (cfg.train.batch_size * cfg.data.seq_len)


def _describe(model, budget, tokens) -> str:
    from models.transformer import param_counts

    counts = param_counts(model)
    where = f"budget {budget:.3g}" if budget is not None else f"{tokens:.3g} tokens"
    return f"{counts['total']} params at {where}"


def command(presets: Mapping[str, Callable[[], Recipe]], description: str, default_preset: str = "cpu"):
    """A study file's ``main(argv=None) -> dict``: parse the command line, then train, measure,
    analyze (`experiments.runner.study.main` with the declaration's `Recipe.stages`)."""
    def main(argv: list[str] | None = None) -> dict:
        from experiments.runner.study import main as study_main

        return study_main(argv, description=description, presets=presets, default_preset=default_preset,
                          stages=lambda study: study.stages())

    return main
