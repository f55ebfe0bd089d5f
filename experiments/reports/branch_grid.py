"""The branch grid of an isoFLOP study (``grid="branches"``, `experiments.studies.isoflop_chinchilla`):
what it spent, and the plot of its tree.

results.csv of a branch grid has a ``role`` column ("stable": a constant-rate run from scratch,
"branch": a WSD cooldown leaving a stable run) and ``leaves_at`` (the tokens where a branch
leaves its stable run). A branch's row holds its endpoint (tokens, FLOPs, eval loss), the point
the isoFLOP analysis uses; the FLOPs it trained itself are those after it leaves, its FLOPs x
(tokens - leaves_at) / tokens (a run's FLOPs grow linearly with its tokens). So

    spent        = sum over stable runs of their FLOPs + sum over branches of their cooldowns' FLOPs
    from scratch = sum over branches of their endpoint FLOPs (each point trained on its own, as
                   the cosine grid trains it)

A branch's parent is the stable run whose id starts its own (`experiments.runner.runs.Run.run_id`).

Comparing analyzed isoFLOP grids of the same budgets (a cosine grid and a branch grid, or two
grids trained at different learning-rate and batch rules): `compare` reads their results.csv and
analysis.json into one table, per grid and approach: FLOPs spent, the exponents a and b with their
95% intervals, and the errors of the held-out-budget check; `optima` puts their optimal loss per
budget side by side (Approach 2's parabola minimum L_opt with its 95% interval, and the best
measured run's loss), with each grid's difference to the first; `recipe_comparisons` fits the
first grid's runs and each other grid's jointly (`scaling.compare`, a shared irreducible loss) and
gives the compute multiplier of the other recipe over the first with its bootstrap band, where the
frontiers cross, and whether the joint law fits within the runs' noise.

    python -m experiments.reports.branch_grid runs/cosine runs/branches    # the two Markdown tables
    python -m experiments.reports.branch_grid runs/iso_deepseek runs/iso_hp --out compare.md
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from etils import epath

from experiments.harness import cli, io
from experiments.reports import choose
from experiments.runner import runs as runs_lib


def is_branch_grid(results: pd.DataFrame) -> bool:
    """Whether a results table comes from a branch grid (it has stable runs and branches)."""
    return "role" in results.columns and bool((results["role"] == "branch").any())


def cost(results: pd.DataFrame, flop_convention: str) -> dict:
    """FLOPs of a branch grid under ``flop_convention`` (module docstring); rows not finished count
    their planned FLOPs (results.csv holds the plan for them)."""
    column = f"flops_{flop_convention}"
    stable = results[results["role"] == "stable"]
    branches = results[results["role"] == "branch"]
    own = branches[column] * (branches["tokens"] - branches["leaves_at"]) / branches["tokens"]
    spent = float(stable[column].sum() + own.sum())
    scratch = float(branches[column].sum())
    return {"stable_runs": len(stable), "branches": len(branches),
            "stable_flops": float(stable[column].sum()), "cooldown_flops": float(own.sum()),
            "spent": spent, "from_scratch": scratch,
            "ratio": spent / scratch if scratch else math.nan}


def parents(results: pd.DataFrame) -> dict[str, str]:
    """branch run id -> its stable run's id."""
    stable_ids = sorted(results.loc[results["role"] == "stable", "run_id"], key=len, reverse=True)
    out = {}
    for rid in results.loc[results["role"] == "branch", "run_id"]:
        out[rid] = next((s for s in stable_ids if rid.startswith(s + "_b")), "")
    return out


def section(results: pd.DataFrame, flop_convention: str, params_column: str = "n_params") -> list[str]:
    """The report's "Branch grid" section."""
    c = cost(results, flop_convention)
    stable = results[results["role"] == "stable"].sort_values(params_column)
    branches = results[results["role"] == "branch"]
    of = parents(results)
    lines = [f"{c['stable_runs']} stable runs (constant learning rate, one per size) and {c['branches']} "
             "cooldown branches, one per isoFLOP point; the analysis above uses the branches' endpoints. "
             f"FLOPs ({flop_convention}) spent: {c['stable_flops']:.3g} in the stable runs + "
             f"{c['cooldown_flops']:.3g} in the cooldowns = {c['spent']:.3g}, against {c['from_scratch']:.3g} "
             f"for the same endpoints each trained from scratch ({c['ratio']:.2f}x; "
             "plots/branch_tree.png).", "",
             "| N | stable run | its tokens | branches | leave at tokens | end at tokens |",
             "|---|---|---|---|---|---|"]
    for s in stable.itertuples(index=False):
        mine = branches[[of.get(r) == s.run_id for r in branches["run_id"]]].sort_values("tokens")
        lines.append(f"| {getattr(s, params_column):.3g} | {s.run_id} | {s.tokens:.3g} | {len(mine)} | "
                     + ", ".join(f"{t:.3g}" for t in mine["leaves_at"]) + " | "
                     + ", ".join(f"{t:.3g}" for t in mine["tokens"]) + " |")
    return lines


def tree_figure(results: pd.DataFrame, params_column: str = "n_params"):
    """Tokens (x, log) against parameters (y, log): each stable run a grey line at its size, each
    branch leaving it at a dot and cooling down to its endpoint (a marker coloured by budget);
    dashed lines are the isoFLOP curves N D = const through each budget's endpoints."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    stable = results[results["role"] == "stable"]
    branches = results[results["role"] == "branch"]
    budgets = sorted(branches["budget"].unique())
    colors = {b: plt.cm.viridis(i / max(1, len(budgets) - 1)) for i, b in enumerate(budgets)}
    start = 0.5 * float(min(branches["leaves_at"].min(), branches["tokens"].min()))
    for s in stable.itertuples(index=False):
        n = getattr(s, params_column)
        ax.plot([start, s.tokens], [n, n], color="0.6", lw=3, solid_capstyle="butt", zorder=1)
    rise = 1.06  # a branch's cooldown drawn slightly above its stable run
    for b in branches.itertuples(index=False):
        n = getattr(b, params_column)
        ax.plot([b.leaves_at, b.tokens], [n, n * rise], color=colors[b.budget], lw=1.5, zorder=2)
        ax.plot([b.leaves_at], [n], "o", color="k", ms=3, zorder=3)
        ax.plot([b.tokens], [n * rise], "s", color=colors[b.budget], ms=6, zorder=3)
    d = np.geomspace(start, 2 * float(branches["tokens"].max()), 50)
    for budget, g in branches.groupby("budget"):
        nd = float(np.median(g[params_column] * g["tokens"]))
        ax.plot(d, nd / d, "--", color=colors[budget], lw=0.8, label=f"C = {budget:.3g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    n_all = results[params_column]
    ax.set_ylim(0.7 * float(n_all.min()), 1.5 * float(n_all.max()))
    ax.set_xlim(start, 2 * float(branches["tokens"].max()))
    ax.set_xlabel("tokens")
    ax.set_ylabel(f"parameters ({params_column})")
    ax.set_title(f"branch tree: {len(stable)} stable runs (grey), {len(branches)} cooldown branches\n"
                 "leaving at the dots, ending on their budget's isoFLOP curve (squares, dashed)", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- comparing grids


def compare(workdirs: Mapping[str, str] | list, flop_convention: str = "6N") -> pd.DataFrame:
    """One row per (grid, approach) of analyzed study workdirs (name -> workdir, or a list of
    workdirs named by their last path part, or by their whole path where those repeat): runs
    trained, FLOPs spent (a branch grid: stable runs + cooldowns; a cosine grid: every run), the
    exponents a, b of N_opt, D_opt with their 95% intervals, and the held-out-budget check's
    relative errors of L_opt and N_opt (NaN where an approach was not fitted). ``ValueError``
    naming a workdir without results or analysis."""
    rows = []
    for name, workdir in _named(workdirs).items():
        results, analysis = _analyzed(workdir)
        if is_branch_grid(results):
            spent, grid = cost(results, flop_convention)["spent"], "branches"
        else:
            spent, grid = float(results[f"flops_{flop_convention}"].sum()), "cosine"
        check = (analysis.get("extrapolation") or {}).get("predictions") or {}
        for key, approach in sorted((analysis.get("approaches") or {}).items()):
            e = approach.get("exponents") or {}
            p = check.get(key) or {}
            rows.append({"grid": name, "kind": grid, "runs": len(results), "flops_spent": spent,
                         "approach": int(key), "a": e.get("a", math.nan),
                         "a_interval": e.get("a_interval"), "b": e.get("b", math.nan),
                         "b_interval": e.get("b_interval"),
                         "heldout_loss_error": p.get("loss_rel_error", math.nan),
                         "heldout_n_opt_error": p.get("n_opt_rel_error", math.nan),
                         "heldout_note": p.get("skipped", "")})
    return pd.DataFrame(rows)


def optima(workdirs: Mapping[str, str] | list) -> pd.DataFrame:
    """One row per (grid, budget) of analyzed isoFLOP workdirs (named as in `compare`): the runs at
    the budget, the best measured eval loss and its run's N, and Approach 2's parabola minimum
    (``L_opt`` with its 95% bootstrap interval, ``N_opt``, whether the minimum is inside the
    sampled sizes); ``dL_best`` is the best measured loss minus the first grid's at the same budget
    (NaN where that grid lacks the budget). ``ValueError`` naming a workdir without analysis.json."""
    rows = []
    for name, workdir in _named(workdirs).items():
        results, analysis = _analyzed(workdir)
        approach = (analysis.get("approaches") or {}).get("2") or {}
        fitted = {float(b["budget"]): b for b in approach.get("budgets") or []}
        points = _points(results)
        for budget, group in points.groupby("budget"):
            best = group.loc[group["eval_loss"].idxmin()]
            b = fitted.get(float(budget), {})
            interval = b.get("loss_opt_interval") or [math.nan, math.nan]
            rows.append({"grid": name, "budget": float(budget), "runs": len(group),
                         "best_loss": float(best["eval_loss"]), "best_n": float(best["n_params"]),
                         "L_opt": float(b.get("loss_opt", math.nan)), "L_opt_lo": float(interval[0]),
                         "L_opt_hi": float(interval[1]), "N_opt": float(b.get("n_opt", math.nan)),
                         "inside": bool(b.get("minimum_inside", False))})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    first = frame[frame["grid"] == frame["grid"].iloc[0]].set_index("budget")["best_loss"]
    frame["dL_best"] = [r.best_loss - first.get(r.budget, math.nan) for r in frame.itertuples(index=False)]
    return frame


def optima_markdown(frame: pd.DataFrame) -> str:
    """`optima`'s table as Markdown, budget by budget, the grids side by side."""
    def num(x, fmt=".3f"):
        return "n/a" if x is None or not math.isfinite(x) else format(x, fmt)

    lines = ["| budget C | grid | runs | best measured loss (its N) | vs first grid | L_opt (Approach 2) | "
             "95% | N_opt | minimum inside |", "|---|---|---|---|---|---|---|---|---|"]
    if frame.empty:
        return "(no completed runs with a loss)"
    for r in frame.sort_values(["budget"], kind="stable").itertuples(index=False):
        lines.append(f"| {r.budget:.3g} | {r.grid} | {r.runs} | {r.best_loss:.3f} ({r.best_n:.3g}) | "
                     f"{num(r.dL_best, '+.3f')} | {num(r.L_opt)} | [{num(r.L_opt_lo)}, {num(r.L_opt_hi)}] | "
                     f"{num(r.N_opt, '.3g')} | {'yes' if r.inside else 'no'} |")
    return "\n".join(lines)


def recipe_comparisons(workdirs: Mapping[str, str] | list, form: str = "free", bootstrap: int = 200) -> str:
    """The first grid against each other one as two training recipes, through `scaling.compare`
    (the report kit's `Compare` section): each grid's completed runs (a branch grid's stable runs
    left out; N = all parameters, D = tokens, loss = eval_loss with its SEM, C = 6 N D) fitted
    jointly with a shared irreducible loss; the compute multiplier of the other grid's recipe over
    the first's, with its bootstrap band, the crossover and the residual diagnostics. Markdown."""
    named = _named(workdirs)
    tables = {}
    for name, workdir in named.items():
        tables[name] = _points(runs_lib.read_results(epath.Path(workdir))).reset_index(drop=True)
    first, *others = list(named)
    lines = []
    for other in others:
        spec = choose.Compare(name=f"{first}_vs_{other}", names=(first, other), table_b=tables[other],
                              columns={"N": "n_params", "D": "tokens", "loss": "eval_loss", "sem": "eval_loss_sem"},
                              form=form, bootstrap=bootstrap)
        result = choose.run_compare(spec, tables[first], tables[other])
        lines += [f"Recipe comparison, {other} against {first}:", "", *choose.compare_lines(result), ""]
    return "\n".join(lines).rstrip()


def _analyzed(workdir) -> tuple[pd.DataFrame, dict]:
    """A study workdir's results.csv and analysis.json; ``ValueError`` naming it without the latter."""
    path = epath.Path(workdir)
    results = runs_lib.read_results(path)
    if not (path / "analysis.json").exists():
        raise ValueError(f"{path}: no analysis.json (has the study's analysis run?)")
    return results, io.read_json(path / "analysis.json")


def _points(results: pd.DataFrame) -> pd.DataFrame:
    """The completed runs with a finite eval loss, a branch grid's stable runs left out."""
    points = results[(results["status"] == "completed") & np.isfinite(results["eval_loss"])]
    return points[points["role"] != "stable"] if "role" in points.columns else points


def _named(workdirs: Mapping[str, str] | list) -> dict:
    """name -> workdir: a mapping as given, a list named by last path parts (whole paths where those
    repeat)."""
    if isinstance(workdirs, Mapping):
        return dict(workdirs)
    names = [epath.Path(w).name for w in workdirs]
    unique = len(set(names)) == len(names)
    return {(name if unique else str(w)): w for name, w in zip(names, workdirs)}


def compare_markdown(frame: pd.DataFrame) -> str:
    """`compare`'s table as Markdown."""
    def iv(x):
        return "n/a" if not x else f"[{x[0]:.3f}, {x[1]:.3f}]"

    def pct(x):
        return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:+.2f}%"

    lines = ["| grid | runs | FLOPs spent | approach | a | a 95% | b | b 95% | held-out L_opt error | "
             "held-out N_opt error |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in frame.itertuples(index=False):
        lines.append(f"| {r.grid} ({r.kind}) | {r.runs} | {r.flops_spent:.3g} | {r.approach} | "
                     f"{r.a:.3f} | {iv(r.a_interval)} | {r.b:.3f} | {iv(r.b_interval)} | "
                     f"{pct(r.heldout_loss_error)} | {pct(r.heldout_n_opt_error)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = cli.OneLineErrors(prog="python -m experiments.reports.branch_grid",
                                description="Compare analyzed isoFLOP grids of the same budgets (cosine and "
                                            "branches, or different learning-rate and batch rules).")
    parser.add_argument("workdirs", nargs="+", help="analyzed study workdirs")
    parser.add_argument("--flop-convention", default="6N")
    parser.add_argument("--out", default=None, help="also write the Markdown to this file")
    parser.add_argument("--bootstrap", type=int, default=200,
                        help="bootstrap draws of the recipe comparison's joint fit (0: no bands)")
    args = parser.parse_args(argv)
    text = (compare_markdown(compare(args.workdirs, args.flop_convention)) + "\n\nOptimal loss per budget:\n\n"
            + optima_markdown(optima(args.workdirs)))
    if len(args.workdirs) > 1:
        text += "\n\n" + recipe_comparisons(args.workdirs, bootstrap=args.bootstrap)
    print(text)
    if args.out:
        epath.Path(args.out).write_text(text + "\n")
    return text


if __name__ == "__main__":
    cli.run(main)
