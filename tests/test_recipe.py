"""The shared run recipe (`experiments.runner.recipe`): a study declares only what differs; the
learning-rate and batch rules are values (a number, a rule's name or any f(N, D, C))."""

from __future__ import annotations

import dataclasses

import pytest

from experiments.harness.config import apply_overrides, deepseek_lr
from experiments.runner import recipe
from experiments.runner.recipe import Recipe, derive
from models.transformer import param_counts


@dataclasses.dataclass(frozen=True)
class Tiny(Recipe):
    name: str = "tiny"
    sizes: tuple[float, ...] = (5e3, 1e4)
    tokens_per_param: float = 20.0

    def runs(self):
        for n in self.sizes:
            run = self.run(n, tokens_per_param=self.tokens_per_param, labels={"tpp": self.tokens_per_param})
            if run is not None:
                yield run


def test_a_study_declares_only_what_differs():
    study = Tiny()
    runs = list(study.runs())
    assert len(runs) == 2 and runs[0].labels == {"tpp": 20.0}
    cfg = runs[1].config
    counts = param_counts(cfg.model)
    steps = cfg.train.tokens // (cfg.train.batch_size * cfg.data.seq_len)
    assert cfg.train.batch_size == 16 and steps == round(20 * counts["total"] / (16 * 64))
    assert cfg.train.lr == pytest.approx(0.5 * deepseek_lr(counts["nonembedding"], cfg.train.tokens))
    assert cfg.model.max_seq_len == 64 and cfg.data.eval_sequences == recipe.BASE.data.eval_sequences
    assert runs[1].budget == pytest.approx(study.flops_per_token(cfg.model) * cfg.train.tokens)


def test_rules_are_values_and_callables_of_n_d_c():
    seen = []

    def lr_rule(n, d, c):
        seen.append((n, d, c))
        return 0.01

    study = Tiny(lr=lr_rule, lr_scale=1.0, rows_per_step="deepseek", batch_multiple=4)
    run = next(iter(study.runs()))
    n, d, c = seen[0]
    assert run.config.train.lr == 0.01 and d == run.config.train.tokens
    assert c == pytest.approx(study.flops_per_token(run.config.model) * d)
    assert run.config.train.batch_size % 4 == 0
    assert apply_overrides(Tiny(), ["lr=3e-3"]).lr == 3e-3          # --set lr=<number>
    assert apply_overrides(Tiny(), ["rows_per_step=deepseek"]).rows_per_step == "deepseek"
    with pytest.raises(ValueError, match="unknown rule"):
        Tiny(lr="no_such_rule")


def test_short_runs_are_dropped_or_extended():
    assert list(Tiny(tokens_per_param=0.01).runs()) == []           # dropped (logged)
    runs = list(Tiny(tokens_per_param=0.01, short_runs="extend").runs())
    assert [r.config.train.tokens // (16 * 64) for r in runs] == [20, 20]


def test_derive_changes_nested_fields_only():
    study = derive(Tiny(), name="t2", base={"data": {"seq_len": 32}, "train": {"log_every": 7}})
    assert study.base.data.seq_len == 32 and study.base.train.log_every == 7
    assert study.base.data.eval_sequences == recipe.BASE.data.eval_sequences and study.name == "t2"


def test_a_fitted_law_file_is_a_rule(tmp_path):
    """``--set lr=<fitted-law file>`` (the hyperparameter-law studies' hand-off): the rule is the
    law's prediction at the run's N (non-embedding) and D."""
    import numpy as np
    import pandas as pd

    import scaling
    from experiments.reports.files import write_fits

    n = np.repeat([1e2, 1e3, 1e4], 3)
    d = np.tile([1e4, 1e5, 1e6], 3)
    data = pd.DataFrame({"N": n, "D": d, "y": 0.5 * n ** -0.3 * d ** -0.05})
    (path,) = write_fits(tmp_path, {"lr_opt": scaling.fit("power_law_2d", data)})
    study = apply_overrides(Tiny(), [f"lr={path}", "lr_scale=1"])
    run = next(iter(study.runs()))
    n_ne = param_counts(run.config.model)["nonembedding"]
    assert run.config.train.lr == pytest.approx(0.5 * n_ne ** -0.3 * run.config.train.tokens ** -0.05, rel=1e-3)
    with pytest.raises(ValueError, match="no such fitted-law file"):
        apply_overrides(Tiny(), [f"lr={tmp_path / 'missing.json'}"])
