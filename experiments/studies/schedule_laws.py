"""Learning-rate-schedule laws on the project's own curves: every size trained under several
schedules (constant, cosine, step, and WSD cooldowns of several lengths and shapes taken as
branches of the constant run); `lr_annealing` (Tissue et al. 2024) and `multi_power` (Luo et al.
2025) fitted per size on some schedules' whole curves (``fit_on``) predict the whole curves of
the others. Dense curves: the eval loss and its SEM at ``curve_points`` fixed token intervals of
every run, on the first ``curve_batches`` held-out batches (``curves.csv``).

    python -m experiments.studies.schedule_laws --workdir runs/sched --preset cpu
    python -m experiments.studies.schedule_laws --workdir runs/sched_ci --preset smoke   # ~2 min on a CPU

Cost: smoke (2 sizes x 5 schedules, 3 of them branches) 1.7 CPU-minutes (2.8 min wall on a loaded
2-core machine); cpu (3 sizes x 6 schedules, 8.6e11 FLOPs trained by 6N) 4.9 CPU-minutes, 10.1 min
wall on a shared 2-core machine (2026-12-07, analysis included). cpu's held-out curves (fitted on
constant + wsd:linear:0.2): mean relative error lr_annealing 1.90% (final point 4.85%),
multi_power 1.07% (final 1.24%), against the points' own SEM of 1.2-2.0% (docs/studies/schedules.md). Writes runs/, results.csv, curves.csv, predictions.csv,
heldout.csv, fits/, plots/ and report.md.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings

import numpy as np
import pandas as pd

from experiments.harness import cli, io
from experiments.harness.optimizer import lr_schedule
from experiments.harness.plan import make_plan
from experiments.reports.kit import Plot, Report, Section, fmt
from experiments.runner.recipe import Recipe, command, derive
from experiments.runner.runs import RUNS_DIR

log = logging.getLogger(__name__)

SMOKE = {"fixture": "schedule_laws_smoke", "workdir": "runs/sched_ci",
         "command": "python -m experiments.studies.schedule_laws --workdir runs/sched_ci --preset smoke"}

LAWS = ("lr_annealing", "multi_power")


def parse_schedule(name: str) -> dict:
    """A schedule's name -> train fields: "constant", "cosine", "step" (x step_factor after 50%
    and 80% of the steps), "wsd:SHAPE:FRACTION" (a cooldown of FRACTION of the steps, SHAPE
    linear or 1-sqrt, branched from the constant run). ``ValueError`` naming it otherwise."""
    if name in ("constant", "cosine"):
        return {"schedule": name}
    if name == "step":
        return {"schedule": "step", "step_milestones": (0.5, 0.8)}
    kind, _, rest = name.partition(":")
    shape, _, fraction = rest.partition(":")
    try:
        frac = float(fraction)
    except ValueError:
        frac = -1.0
    if kind != "wsd" or shape not in ("linear", "1-sqrt") or not 0 < frac < 1:
        raise ValueError(f"schedule {name!r}: expected constant, cosine, step or wsd:SHAPE:FRACTION "
                         "(SHAPE linear or 1-sqrt, FRACTION in (0, 1))")
    return {"schedule": "wsd", "cooldown": shape, "fraction": frac}


@dataclasses.dataclass(frozen=True)
class Study(Recipe):
    """sizes x schedules, each run ``tokens_per_param`` x N tokens; laws fitted per size on the
    curves of ``fit_on`` and checked on the others."""

    name: str = "schedule_laws"
    sizes: tuple[float, ...] = (8e3, 1.6e4, 3.2e4)
    tokens_per_param: float = 25.0
    schedules: tuple[str, ...] = ("constant", "cosine", "wsd:linear:0.2", "wsd:1-sqrt:0.2",
                                  "wsd:linear:0.5", "step")
    fit_on: tuple[str, ...] = ("constant", "wsd:linear:0.2")
    curve_points: int = 16
    curve_batches: int = 2
    step_factor: float = 0.316
    fit_starts: int = 4
    fit_max_iter: int = 60

    def __post_init__(self):
        super().__post_init__()
        for s in self.schedules:
            parse_schedule(s)
        missing = [s for s in self.fit_on if s not in self.schedules]
        if missing or not self.fit_on:
            raise ValueError(f"Study.fit_on={self.fit_on}: must be some of the schedules {self.schedules}")
        if any(s.startswith("wsd") for s in self.schedules) and "constant" not in self.schedules:
            raise ValueError("Study.schedules: wsd cooldowns branch from the constant run; add 'constant'")
        if self.curve_points < 3:
            raise ValueError(f"Study.curve_points={self.curve_points}: at least 3 points per curve")

    def runs(self):
        for n in self.sizes:
            base = self.run(n, tokens_per_param=self.tokens_per_param)
            if base is None:
                continue
            plan = make_plan(base.config)
            steps, tokens = plan.steps, plan.tokens_at(plan.steps)
            every = max(1, steps // 20)  # branch steps are multiples of it, kept by the parent
            common = {"warmup": float(plan.warmup_steps), "curve_every": max(1, tokens // self.curve_points),
                      "curve_batches": self.curve_batches, "checkpoint_every": 0}
            parent_id = None
            order = sorted(self.schedules, key=lambda s: s.startswith("wsd"))  # parents first
            for name in order:
                spec = parse_schedule(name)
                fields = dict(common)
                if spec["schedule"] == "wsd":
                    leave = max(every, round(steps * (1 - spec["fraction"]) / every) * every)
                    fields.update(schedule="wsd", cooldown=spec["cooldown"], decay_steps=steps - leave,
                                  parent=parent_id)
                elif spec["schedule"] == "constant":
                    fields.update(schedule="constant", keep_every=every)
                else:
                    fields.update({k: v for k, v in spec.items()})
                    if spec["schedule"] == "step":
                        fields["step_factor"] = self.step_factor
                cfg = derive(base.config, train=fields)
                run = dataclasses.replace(base, config=cfg, labels={"schedule": name, "size": n})
                if name == "constant":
                    parent_id = run.run_id
                yield run

    def analysis(self):
        return REPORT.stage


# ----------------------------------------------------------------------------- curves


def curves(context) -> pd.DataFrame:
    """Every run's dense curve: run_id, schedule, size, n_params, step, tokens, curve_loss,
    curve_loss_sem (a branch's points before it left its parent are the parent's)."""
    rows = []
    done = context.results[context.results["status"] == "completed"]
    for r in done.itertuples():
        run_dir = context.workdir / RUNS_DIR / r.run_id
        for rec in io.read_jsonl(run_dir / "metrics.jsonl"):
            if "curve_loss" in rec:
                rows.append({"run_id": r.run_id, "schedule": r.schedule, "size": r.size,
                             "n_params": r.n_params, "step": rec["step"], "tokens": rec["tokens"],
                             "curve_loss": rec["curve_loss"], "curve_loss_sem": rec["curve_loss_sem"]})
    return pd.DataFrame(rows, columns=["run_id", "schedule", "size", "n_params", "step", "tokens",
                                       "curve_loss", "curve_loss_sem"])


def rates(context, run_id: str) -> tuple[np.ndarray, int]:
    """(the rate of every update of a run, its warmup steps), from its config.json."""
    from experiments.harness.config import from_dict

    cfg = from_dict(io.read_json(context.workdir / RUNS_DIR / run_id / "config.json"))
    plan = make_plan(cfg)
    return np.asarray(lr_schedule(cfg, plan, np)(np.arange(plan.steps)), np.float64), plan.warmup_steps


def _starts(law, loss_min: float, peak: float, n: int) -> dict:
    """A few starting points scaled to the data (the laws' own grids assume other rates)."""
    grid = {"lr_annealing": [{"L0": loss_min * a, "A": 1.0, "alpha": al, "C": c / peak}
                             for a in (0.5, 0.9) for al in (0.3, 0.7) for c in (1e-3, 1e-2)],
            "multi_power": [{"L0": loss_min * a, "A": 1.0, "alpha": al, "B": b / peak, "C": 2.0,
                             "beta": 0.5, "gamma": 0.5}
                            for a in (0.5, 0.9) for al in (0.4,) for b in (0.3, 3.0)]}[law]
    pts = grid[:max(1, n)]
    return {k: [p[k] for p in pts] for k in pts[0]}


def fit_size(context, size_curves: pd.DataFrame, study) -> tuple[dict, list[dict], list[str]]:
    """Both laws on one size: fitted on ``fit_on``'s curves, predicting every curve."""
    import scaling
    from scaling.laws.loss import lr_annealing_areas
    from scaling.laws.schedule import multi_power_law

    notes, preds, laws = [], [], {}
    runs = size_curves.drop_duplicates("run_id")
    schedules, warmup = {}, 0
    for r in runs.itertuples():
        schedules[r.schedule], warmup = rates(context, r.run_id)
    names = list(schedules)
    data = size_curves.copy()
    s1 = np.empty(len(data))
    s2 = np.empty(len(data))
    for i, (name, step) in enumerate(zip(data["schedule"], data["step"])):
        a1, a2 = lr_annealing_areas(schedules[name], warmup_steps=warmup)
        s1[i], s2[i] = a1[step - 1], a2[step - 1]
    data["S1"], data["S2"] = s1, s2
    data["schedule_index"] = [float(names.index(n)) for n in data["schedule"]]
    fit_rows = data["schedule"].isin(study.fit_on).to_numpy()
    fitted_names = [n for n in names if n in study.fit_on]
    data["fit_index"] = [float(fitted_names.index(n)) if n in fitted_names else 0.0
                         for n in data["schedule"]]
    peak = max(float(lr.max()) for lr in schedules.values())
    loss_min = float(data["curve_loss"].min())
    for law_name in LAWS:
        try:
            if law_name == "lr_annealing":
                law = scaling.laws.get("lr_annealing")
                columns = {"S1": "S1", "S2": "S2", "loss": "curve_loss"}
            else:
                # fitted bound to the fit schedules only (its cost grows with the steps where any
                # bound schedule decays), then evaluated bound to all of them
                law = multi_power_law({n: schedules[n] for n in fitted_names}, warmup_steps=warmup)
                columns = {"schedule": "fit_index", "step": "step", "loss": "curve_loss"}
            fitted = scaling.fit(law, data[fit_rows].reset_index(drop=True), columns=columns,
                                 starts=_starts(law_name, loss_min, peak, study.fit_starts),
                                 max_iter=study.fit_max_iter, continuation=False, threads=1)
        except ValueError as err:
            notes.append(f"{law_name} not fitted at N={runs['n_params'].iloc[0]:.3g}: {err}")
            continue
        laws[law_name] = fitted
        if law_name == "multi_power":
            every = multi_power_law(schedules, warmup_steps=warmup)
            predicted = np.asarray(every(fitted.params, schedule=data["schedule_index"].to_numpy(),
                                         step=data["step"].to_numpy()), np.float64)
        else:
            x = {c: data[columns[c]].to_numpy(np.float64) for c in law.covariates}
            with warnings.catch_warnings():  # held-out curves lie outside the fit's range on purpose
                warnings.simplefilter("ignore", UserWarning)
                predicted = np.asarray(fitted.predict(**x), np.float64).reshape(-1)
        for row, p, used in zip(data.itertuples(), predicted, fit_rows):
            preds.append({"law": law_name, "run_id": row.run_id, "schedule": row.schedule,
                          "size": row.size, "n_params": row.n_params, "step": row.step,
                          "tokens": row.tokens, "measured": row.curve_loss,
                          "measured_sem": row.curve_loss_sem, "predicted": float(p),
                          "role": "fit" if used else "held out"})
    return laws, preds, notes


def compute(context) -> dict:
    study = context.declaration
    table = curves(context)
    laws, preds, notes = {}, [], []
    if table.empty:
        return {"laws": {}, "notes": ["no completed run has a curve"], "curves": table,
                "predictions": pd.DataFrame(), "heldout": pd.DataFrame()}
    for size, group in table.groupby("size"):
        fitted, p, n = fit_size(context, group, study)
        n_params = group["n_params"].iloc[0]
        laws.update({f"{name}_N{n_params:.3g}": f for name, f in fitted.items()})
        preds += p
        notes += n
    predictions = pd.DataFrame(preds)
    rows = []
    if not predictions.empty:
        for (law, run_id), g in predictions.groupby(["law", "run_id"], sort=False):
            g = g.sort_values("step")
            rel = (g["predicted"] - g["measured"]) / g["measured"]
            rows.append({"law": law, "schedule": g["schedule"].iloc[0], "n_params": g["n_params"].iloc[0],
                         "role": g["role"].iloc[0], "points": len(g),
                         "mean_rel_error": float(np.mean(np.abs(rel))),
                         "final_rel_error": float(rel.iloc[-1]),
                         "final_measured": float(g["measured"].iloc[-1]),
                         "final_sem_rel": float(g["measured_sem"].iloc[-1] / g["measured"].iloc[-1])})
    return {"laws": laws, "notes": notes, "curves": table, "predictions": predictions,
            "heldout": pd.DataFrame(rows)}


# ----------------------------------------------------------------------------- report


def heldout_section(a) -> list[str]:
    frame = a.out["heldout"]
    if frame.empty:
        return ["No law was fitted."]
    lines = ["Relative errors of each law's curve against the measured eval loss: the mean over the "
             "curve's points of |predicted - measured| / measured, and the signed error at the last "
             "point; the measured final loss's own SEM (relative) for scale.", "",
             "| law | N | schedule | role | points | mean rel. error | final rel. error | final SEM (rel.) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in frame.sort_values(["law", "n_params", "role"]).itertuples():
        lines.append(f"| {r.law} | {r.n_params:.3g} | {r.schedule} | {r.role} | {r.points} | "
                     f"{100 * r.mean_rel_error:.2f}% | {100 * r.final_rel_error:+.2f}% | "
                     f"{100 * r.final_sem_rel:.2f}% |")
    held = frame[frame["role"] == "held out"]
    lines += ["", "Mean over held-out curves: " + ", ".join(
        f"{law} {100 * g['mean_rel_error'].mean():.2f}% (final {100 * g['final_rel_error'].abs().mean():.2f}%)"
        for law, g in held.groupby("law")) + ".",
        "", "For comparison (as quoted, not re-checked per figure): Luo et al. 2025 report the "
        "multi-power law predicting held-out schedules' curves of 25M-400M models within about "
        "0.1-0.2%; these runs are 10^4-10^5 parameters, a few hundred steps, with curve points "
        "whose own SEM is in the last column."]
    return lines


def curves_figure(a):
    import matplotlib.pyplot as plt

    predictions = a.out["predictions"]
    sizes = sorted(predictions["n_params"].unique()) if not predictions.empty else []
    fig, axes = plt.subplots(len(LAWS), max(1, len(sizes)), figsize=(4.5 * max(1, len(sizes)), 7),
                             squeeze=False)
    for j, n in enumerate(sizes):
        for i, law in enumerate(LAWS):
            ax = axes[i, j]
            g = predictions[(predictions["n_params"] == n) & (predictions["law"] == law)]
            for k, (schedule, c) in enumerate(g.groupby("schedule", sort=False)):
                c = c.sort_values("tokens")
                color = f"C{k}"
                ax.errorbar(c["tokens"], c["measured"], yerr=c["measured_sem"], fmt="o", ms=3,
                            color=color, label=f"{schedule} ({c['role'].iloc[0]})")
                ax.plot(c["tokens"], c["predicted"], "-" if c["role"].iloc[0] == "fit" else "--",
                        color=color)
            ax.set_title(f"{law}, N={n:.3g}", fontsize=9)
            ax.set_xlabel("tokens")
            ax.set_ylabel("eval loss")
            ax.legend(fontsize=6)
    fig.suptitle("measured (points, SEM bars), fitted (solid) and predicted (dashed) curves", fontsize=9)
    fig.tight_layout()
    return fig


def branch_tree_figure(a):
    """The branch tree: per size, each run from scratch as a line over its tokens, and every
    cooldown branch leaving its parent (a dot) and running to its end."""
    import matplotlib.pyplot as plt

    ctx = a.context
    done = ctx.results[ctx.results["status"] == "completed"]
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.5 * max(1, len(done))))
    labels, y = [], 0
    for n, group in done.groupby("n_params"):
        for r in group.sort_values("run_id").itertuples():
            result = io.read_json(ctx.workdir / RUNS_DIR / r.run_id / "result.json")
            end = r.tokens
            if result.get("branch_step") is not None:
                leave = end * result["branch_step"] / result["steps"]
                ax.plot([0, leave], [y, y], color="0.8", lw=2)
                ax.plot([leave, end], [y, y], color="C1", lw=2)
                ax.plot([leave], [y], "o", color="C1", ms=4)
            else:
                ax.plot([0, end], [y, y], color="C0", lw=2)
            labels.append(f"N={n:.3g} {r.schedule}")
            y += 1
        y += 0.5
    ax.set_yticks(_label_positions(done))
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel("tokens (grey: shared with the parent; orange: the branch's own cooldown)")
    ax.set_title("runs from scratch (blue) and cooldown branches (orange, leaving at the dot)", fontsize=9)
    fig.tight_layout()
    return fig


def _label_positions(done) -> list[float]:
    out, y = [], 0.0
    for _, group in done.groupby("n_params"):
        for _ in range(len(group)):
            out.append(y)
            y += 1
        y += 0.5
    return out


def overhead_section(a) -> list[str]:
    """What the dense curves cost: their eval time over the runs' wall time."""
    ctx = a.context
    curve_s = wall = 0.0
    for r in ctx.results[ctx.results["status"] == "completed"].itertuples():
        result = io.read_json(ctx.workdir / RUNS_DIR / r.run_id / "result.json")
        curve_s += result.get("curve_eval_s") or 0.0
        wall += result.get("wall_time_s") or 0.0
    if not wall:
        return ["No run finished."]
    return [f"The curve points took {curve_s:.1f} s of the runs' {wall:.1f} s "
            f"({100 * curve_s / wall:.1f}%; eval on {ctx.declaration.curve_batches} held-out batches "
            f"at {ctx.declaration.curve_points} points per run). Branches: each wsd run trained only its "
            "cooldown (its steps before leaving the constant run are the parent's)."]


REPORT = Report(
    title="Schedule laws",
    compute=compute,
    sections=[Section("Held-out schedules", heldout_section),
              Section("Cost of the dense curves", overhead_section)],
    plots=[Plot("curves", curves_figure), Plot("branches", branch_tree_figure)],
    tables={"curves.csv": lambda a: a.out["curves"], "predictions.csv": lambda a: a.out["predictions"],
            "heldout.csv": lambda a: a.out["heldout"]},
)


def smoke() -> Study:
    return derive(Study(), name="schedule_laws_smoke", sizes=(5e3, 1.2e4), tokens_per_param=25.0,
                  schedules=("constant", "cosine", "wsd:linear:0.25", "wsd:1-sqrt:0.25", "wsd:linear:0.5"),
                  fit_on=("constant", "cosine"), curve_points=8, curve_batches=1, fit_starts=2,
                  fit_max_iter=30,
                  base={"data": {"eval_sequences": 64}})


PRESETS = {"smoke": smoke, "cpu": Study}
main = command(PRESETS, __doc__)

if __name__ == "__main__":
    cli.run(main)
