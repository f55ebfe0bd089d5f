"""Two-step task prediction on a test-time-compute study's checkpoints (its report's section).

    out = task_prediction.analyze(task, models, pass_at_k.cross_model, bootstrap=100)  # task.csv, per-model fits
    out["held_out"]   # the largest model's final pass@1: two-step (both step-2 laws) vs coverage_compute_law

Bhagia et al. 2024 ("Establishing Task Scaling Laws via Compute-Efficient Model Ladders",
arXiv:2412.04403) predict a task's accuracy in two steps:

1. task loss from (N, D): ``chinchilla``, L(N, D) = E + A / N^alpha + B / D^beta, fitted to the task
   loss (the answer NLL of `experiments.measures.task_loss`, nats per answer) of the final
   checkpoints (``step1="final"``, the paper's choice: an intermediate checkpoint of a cosine
   schedule has not decayed its learning rate) or of every checkpoint (``step1="all"``: a grid
   too small for 5 parameters on its final checkpoints, the smoke preset's);
2. pass@1 from task loss, over every checkpoint (intermediate ones fill in the curve), with
   ``accuracy_sigmoid``, Acc(L) = a / (1 + exp(-k (L - L0))) + b (Bhagia et al. 2024), and with
   Gadre et al. 2024's (arXiv:2403.08540) ``error_exponential``, Err(L) = eps - k exp(-gamma L),
   on the error 1 - pass@1.

Both steps go through `scaling.fit` with a bootstrap; a prediction pushes step 1's draws of the
task loss through step 2's draws (`scaling.analysis.task_accuracy.TwoStep`, the chained band).

Held out: the largest model of the grid (largest N, then most tokens) is left out with all its
checkpoints; both steps are refitted on the others and predict its final pass@1, beside
``coverage_compute_law`` (the report's cross-model law, coverage(N, D, k) = exp(-A N^-a_N D^-a_D
k^-b)) refitted on the other models' pass@k curves and asked for the same model's pass@1 (k = 1).
The measured value is the expected pass@1 of task.csv (exact, from the logits) and the sampled
mean c/n of counts.csv beside it. Only pass@1 is chained: step 2 is fitted on pass@1, and a law from
task loss to pass@k at k > 1 would need more than one number per checkpoint.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from experiments.reports import files as files_lib
from experiments.reports.kit import fmt as _g, interval as _iv

STEP2_LAWS = ("accuracy_sigmoid", "error_exponential")
COLUMNS = ("run_id", "n_params", "step", "tokens", "final", "task_loss", "pass_at_1")


def checkpoint_table(task: pd.DataFrame) -> pd.DataFrame:
    """task.csv's completed rows as (run_id, N, D, step, final, task_loss, accuracy, error);
    ValueError naming the column when one is missing or a value is out of range."""
    done = task[task["status"] == "completed"] if "status" in task else task
    missing = [c for c in COLUMNS if c not in done.columns]
    if missing:
        raise ValueError(f"task.csv: missing columns {missing}")
    table = pd.DataFrame({"run_id": done["run_id"].astype(str), "N": done["n_params"].astype(float),
                          "D": done["tokens"].astype(float), "step": done["step"].astype(int),
                          "final": done["final"].astype(str).str.lower().isin(("true", "1")),
                          "task_loss": done["task_loss"].astype(float),
                          "accuracy": done["pass_at_1"].astype(float)}).reset_index(drop=True)
    if not (np.isfinite(table["task_loss"]) & (table["task_loss"] > 0)).all():
        raise ValueError("task.csv: task_loss must be finite and positive")
    if not table["accuracy"].between(0, 1).all():
        raise ValueError("task.csv: pass_at_1 must be in [0, 1]")
    table["error"] = 1.0 - table["accuracy"]
    return table


def largest_model(table: pd.DataFrame) -> str:
    """The run with the largest N, then the most tokens at its final checkpoint."""
    finals = table[table["final"]].sort_values(["N", "D"])
    if finals.empty:
        raise ValueError("task.csv: no final checkpoint")
    return str(finals["run_id"].iloc[-1])


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = fn(*args, **kwargs)
    return value, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def fit_steps(table: pd.DataFrame, *, step1: str = "final", bootstrap: int = 100, seed: int = 0) -> dict:
    """Step 1 once and step 2 with each of `STEP2_LAWS` on ``table``: ``{"loss": FittedLaw,
    law: TwoStep, "notes": [...]}`` (a law that cannot be fitted is left out, with a note)."""
    import scaling
    from scaling.analysis.task_accuracy import TwoStep

    if step1 not in ("final", "all"):
        raise ValueError(f"task prediction: step1={step1!r}; 'final' or 'all'")
    rows = table[table["final"]] if step1 == "final" else table
    out: dict = {"notes": []}
    try:
        loss, warned = _quiet(scaling.fit, "chinchilla", {"N": rows["N"].to_numpy(), "D": rows["D"].to_numpy(),
                                                          "loss": rows["task_loss"].to_numpy()},
                              bootstrap=bootstrap, seed=seed)
        out["notes"] += [f"step 1 (chinchilla): {w}" for w in warned]
    except (ValueError, ArithmeticError) as err:
        out["notes"].append(f"step 1 (chinchilla) not fitted on {len(rows)} checkpoints: {err}")
        return out
    out["loss"] = loss
    for name in STEP2_LAWS:
        target = "accuracy" if name == "accuracy_sigmoid" else "error"
        try:
            acc, warned = _quiet(scaling.fit, name, {"L": table["task_loss"].to_numpy(), target: table[target].to_numpy()},
                                 bootstrap=bootstrap, seed=seed)
            out["notes"] += [f"step 2 ({name}): {w}" for w in warned]
            out[name] = TwoStep(loss_fit=loss, accuracy_fit=acc, seed=seed)
        except (ValueError, ArithmeticError) as err:
            out["notes"].append(f"step 2 ({name}) not fitted: {err}")
    return out


def pass_at_1(two_step, N: float, D: float, level: float = 0.95) -> tuple[float, tuple[float, float] | None]:
    """A two-step prediction of pass@1 at (N, D) with its chained band (error laws: 1 - error)."""
    band = two_step.predict(N, D, level=level)
    value = float(np.asarray(band.value).reshape(-1)[0])
    lo = None if band.lower is None else (float(np.asarray(band.lower).reshape(-1)[0]),
                                         float(np.asarray(band.upper).reshape(-1)[0]))
    if two_step.target == "error":
        return 1.0 - value, None if lo is None else (1.0 - lo[1], 1.0 - lo[0])
    return value, lo


def _row(method: str, predicted: float, band, measured: float) -> dict:
    return {"method": method, "predicted": predicted, "interval": band,
            "rel_error": predicted / measured - 1 if measured > 0 else None,
            "covers": None if band is None else bool(band[0] <= measured <= band[1])}


def analyze(task: pd.DataFrame, models: list[dict], cross_model, *, step1: str = "final", bootstrap: int = 100,
            seed: int = 0, held_out: str | None = None) -> dict:
    """The held-out check (module docstring). ``models``: `experiments.reports.pass_at_k.per_model`'s
    list (pass@k curves, measured pass@1); ``cross_model(models, bootstrap=) -> (FittedLaw | None,
    reason)``: the comparison law's fit (`experiments.reports.pass_at_k.cross_model`); ``held_out``:
    the run to hold out (default `largest_model`)."""
    table = checkpoint_table(task)
    held = largest_model(table) if held_out is None else str(held_out)
    if held not in set(table["run_id"][table["final"]]):
        raise ValueError(f"task prediction: held_out={held!r} has no final checkpoint in task.csv")
    train = table[table["run_id"] != held]
    final = table[(table["run_id"] == held) & table["final"]].iloc[0]
    out = {"table": table, "held_out_id": held, "largest": held_out is None, "step1": step1, "notes": [],
           "runs": int(table["run_id"].nunique()), "checkpoints": len(table)}
    if train["run_id"].nunique() < 2:
        out["skipped"] = f"{train['run_id'].nunique()} model(s) besides the held-out one: too few to fit"
        return out
    fits = fit_steps(train, step1=step1, bootstrap=bootstrap, seed=seed)
    out["fits"] = fits
    out["notes"] += fits["notes"]
    sampled = next((m for m in models if m["run_id"] == held), None)
    measured = float(final["accuracy"])
    N, D = float(final["N"]), float(final["D"])
    rows = []
    if "loss" in fits:
        pl, pband = files_lib.predict_with_band(fits["loss"], N=N, D=D)
        out["loss_row"] = {"measured": float(final["task_loss"]), "predicted": pl, "interval": pband}
    for name in STEP2_LAWS:
        if name in fits:
            rows.append(_row(f"two-step, {name}", *pass_at_1(fits[name], N, D), measured))
    others = [m for m in models if m["run_id"] != held]
    law, reason = cross_model(others, bootstrap=max(bootstrap, 1))
    if law is None:
        out["notes"].append(f"coverage_compute_law not fitted without {held}: {reason}")
    else:
        rows.append(_row("coverage_compute_law (k = 1)", *files_lib.predict_with_band(law, N=N, D=D, k=1.0), measured))
        out["coverage_law"] = law
    out["held_out"] = {"run_id": held, "N": N, "D": D, "measured": measured,
                       "sampled": None if sampled is None else float(sampled["pass_at_k"][0]),
                       "samples": None if sampled is None else int(sampled["n"]), "rows": rows}
    return out


# ----------------------------------------------------------------------------- report


def section(a) -> list[str]:
    """report.md's section (the analysis's ``out["task"]``)."""
    t = a.out.get("task")
    if t is None:
        return ["Not run: no task.csv (the study's task stage measures it)."]
    if "error" in t:
        return [f"Not run: {t['error']}"]
    table = t["table"]
    lines = [f"Task loss (answer NLL, nats per answer) and expected pass@1 at {t['checkpoints']} checkpoints of "
             f"{t['runs']} runs (task.csv). Step 1: chinchilla on the "
             f"{'final checkpoints' if t['step1'] == 'final' else 'checkpoints'}; step 2: accuracy_sigmoid on pass@1 "
             "and error_exponential on 1 - pass@1, over every checkpoint; bands chain both steps' bootstrap draws.", "",
             "| run | N | step | D | task loss | pass@1 |", "|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.run_id} | {_g(r.N)} | {r.step}{' (final)' if r.final else ''} | {_g(r.D)} | "
                     f"{r.task_loss:.4f} | {r.accuracy:.4f} |")
    if "skipped" in t:
        return lines + ["", f"Held out: not run: {t['skipped']}"]
    h = t.get("held_out")
    lines += ["", f"Held out: {'the largest model, ' if t.get('largest', True) else ''}{t['held_out_id']}, with all its checkpoints; both steps and "
              "coverage_compute_law refitted on the other models predict its final pass@1."]
    if "loss_row" in t:
        lr = t["loss_row"]
        lines.append(f"Step 1 predicts its task loss {lr['predicted']:.4f} (95% {_iv(lr['interval'], 4)}); "
                     f"measured {lr['measured']:.4f} ({100 * (lr['predicted'] / lr['measured'] - 1):+.1f}%).")
    if h is not None:
        sampled = "" if h["sampled"] is None else f"; sampled mean c/n over {h['samples']} samples: {h['sampled']:.4f}"
        lines += ["", f"Measured pass@1 (expected, from the logits): {h['measured']:.4f}{sampled}.", "",
                  "| held-out prediction | pass@1 | 95% | error | covers |", "|---|---|---|---|---|"]
        for r in h["rows"]:
            err = "n/a" if r["rel_error"] is None else f"{100 * r['rel_error']:+.1f}%"
            lines.append(f"| {r['method']} | {r['predicted']:.4f} | {_iv(r['interval'], 4)} | {err} | {r['covers']} |")
    lines.append("")
    for name in ("loss", *STEP2_LAWS):
        fit = t.get("fits", {}).get(name)
        if fit is None:
            continue
        law = fit if name == "loss" else fit.accuracy_fit
        params = ", ".join(f"{p} = {_g(v, 3)}" for p, v in law.params.items())
        lines.append(f"- {'step 1 chinchilla' if name == 'loss' else 'step 2 ' + name} (without the held-out model): "
                     f"{params}")
    lines += [f"- note: {n}" for n in t["notes"][:6]]
    return lines


def plot(a):
    """The step-2 sigmoid fitted without the held-out model, its checkpoints and the chained
    prediction for the held-out model beside its measured pass@1 (`scaling.plots.plot_two_step`)."""
    from scaling.plots import plot_two_step

    t = a.out.get("task") or {}
    fit = t.get("fits", {}).get("accuracy_sigmoid")
    if fit is None:
        raise ValueError("two-step task prediction not fitted")
    h = t["held_out"]
    train = t["table"][t["table"]["run_id"] != t["held_out_id"]]
    ax = plot_two_step(fit, train, targets=[(h["N"], h["D"], h["measured"])])
    measured_loss = t["table"].query("run_id == @t['held_out_id'] and final")["task_loss"].iloc[0]
    ax.scatter([measured_loss], [h["measured"]], marker="D", s=40, facecolors="none", edgecolors="k", zorder=4,
               label="held-out model at its measured task loss")
    top = max(float(train["accuracy"].max()), h["measured"], *(r["interval"][1] for r in h["rows"]
                                                                if r["interval"] is not None and "two-step" in r["method"]))
    ax.set(ylabel="pass@1", ylim=(0, 1.3 * top), title=f"two-step pass@1, held out: N={h['N']:.3g}, D={h['D']:.3g}")
    ax.legend(fontsize="small")
    return ax.figure


def fitted_laws(task: dict | None) -> dict:
    """``{file stem: FittedLaw}`` of the held-out fits (fits/<stem>.json)."""
    fits = (task or {}).get("fits", {})
    laws = {"task_loss_chinchilla__held_out": fits["loss"]} if "loss" in fits else {}
    laws.update({f"task_{name}__held_out": fits[name].accuracy_fit for name in STEP2_LAWS if name in fits})
    if (task or {}).get("coverage_law") is not None:
        laws["coverage_compute_law__held_out_largest"] = task["coverage_law"]
    return laws


def safe_analyze(task, models, cross_model, **options) -> dict | None:
    """`analyze`, or ``{"error": reason}`` when task.csv cannot be read (the report says why)."""
    if task is None or len(task) == 0:
        return None
    try:
        return analyze(task, models, cross_model, **options)
    except ValueError as err:
        return {"error": str(err)}


__all__ = ["STEP2_LAWS", "analyze", "checkpoint_table", "fit_steps", "fitted_laws", "largest_model", "pass_at_1", "plot",
           "safe_analyze", "section"]
