"""The multi-power law (Luo et al. 2025) against a loop written from the formula, the schedules it
cannot represent, and the schedule_laws smoke study as its docstring runs it (relative workdir):
dense curves of every run, cooldowns as branches, both laws fitted and checked on held-out
schedules' whole curves."""

import numpy as np
import pandas as pd
import pytest

import scaling
from scaling.laws.schedule import multi_power_law, schedule_terms

P = {"L0": 2.0, "A": 0.8, "alpha": 0.5, "B": 100.0, "C": 2.0, "beta": 0.5, "gamma": 0.5}


def by_hand(lr, t, warmup):
    """L(t) from the paper's formula, one term at a time (eta_0 = the peak at warmup's end)."""
    eta = np.concatenate([[0.0], lr])
    cum = np.cumsum(eta)
    ld = 0.0
    for k in range(max(warmup, 1) + 1, t + 1):
        drop = eta[k - 1] - eta[k]
        if drop:
            s_k = cum[t] - cum[k - 1]
            ld += drop * (1 - (P["C"] * eta[k] ** -P["gamma"] * s_k + 1) ** -P["beta"])
    return P["L0"] + P["A"] * cum[t] ** -P["alpha"] - P["B"] * ld


def schedules(steps=120, warmup=6, peak=3e-3):
    t = np.arange(steps)
    warm = peak * (t[:warmup] + 1) / warmup
    cosine = 0.1 * peak + 0.9 * peak * 0.5 * (1 + np.cos(np.pi * np.clip((t + 1 - warmup) / (steps - warmup), 0, 1)))
    step = np.where(t + 1 > 0.5 * steps, 0.3 * peak, peak)
    wsd = peak - 0.9 * peak * np.sqrt(np.clip((t + 1 - 90) / 30, 0, 1))
    out = {"cosine": cosine, "step": step, "wsd": wsd, "constant": np.full(steps, peak)}
    for lr in out.values():
        lr[:warmup] = warm
    return out


def test_multi_power_matches_the_formula_term_by_term():
    sch = schedules()
    law = multi_power_law(sch, warmup_steps=6)
    names = list(sch)
    r = np.array([0, 0, 1, 1, 2, 2, 3], float)
    t = np.array([7, 120, 60, 61, 100, 120, 120], float)
    got = np.asarray(scaling.laws.get(law)(P, schedule=r, step=t), np.float64)
    want = [by_hand(sch[names[int(i)]], int(s), 6) for i, s in zip(r, t)]
    np.testing.assert_allclose(got, want, rtol=2e-6)  # float32 outside the fits' x64
    assert "multi_power" in scaling.laws.names()


def test_schedules_the_law_cannot_represent_are_one_line_errors():
    rising = np.concatenate([np.full(10, 1e-3), np.full(10, 2e-3)])
    with pytest.raises(ValueError, match=r"schedule 'cyclic' rises at step 11"):
        multi_power_law({"cyclic": rising})
    with pytest.raises(ValueError, match=r"schedule 'to_zero' has a rate <= 0 at step 5"):
        schedule_terms([1e-3, 1e-3, 5e-4, 2e-4, 0.0], name="to_zero")
    # warmup rises are allowed: they are warmup
    multi_power_law({"warm": np.array([1e-4, 5e-4, 1e-3, 1e-3, 5e-4])}, warmup_steps=3)


def test_the_study_names_a_schedule_it_cannot_train():
    from experiments.studies.schedule_laws import Study

    with pytest.raises(ValueError, match="schedule 'cyclic'"):
        Study(schedules=("constant", "cyclic"))
    with pytest.raises(ValueError, match="fit_on"):
        Study(fit_on=("warmup_only",))


def test_schedule_laws_smoke(schedule_laws_smoke):
    workdir, proc = schedule_laws_smoke
    results = pd.read_csv(workdir / "results.csv")
    assert (results["status"] == "completed").all()
    branches = results[results["schedule"].str.startswith("wsd")]
    constant = results[results["schedule"] == "constant"]
    assert len(branches) == 6 and all(  # every cooldown is a branch of its size's constant run
        any(b.startswith(c) and "_b" in b for c in constant["run_id"]) for b in branches["run_id"])
    curves = pd.read_csv(workdir / "curves.csv")
    assert set(curves["run_id"]) == set(results["run_id"])
    assert curves.groupby("run_id").size().min() >= 8 and (curves["curve_loss_sem"] > 0).all()
    heldout = pd.read_csv(workdir / "heldout.csv")
    assert set(heldout["law"]) == {"lr_annealing", "multi_power"}
    held = heldout[heldout["role"] == "held out"]
    assert set(held["schedule"]) == {"wsd:linear:0.25", "wsd:1-sqrt:0.25", "wsd:linear:0.5"}
    assert np.isfinite(held["mean_rel_error"]).all() and (held["mean_rel_error"] < 0.5).all()
    report = (workdir / "report.md").read_text()
    assert "## Held-out schedules" in report and "## Cost of the dense curves" in report
    assert (workdir / "plots" / "curves.png").exists() and (workdir / "plots" / "branches.png").exists()
