"""The numbers the docs quote from the studies, with their tolerances, in one place, and a command
that checks them.

    python -m benchmarks.claims --list                         # every claim: id, value, tolerance, source
    python -m benchmarks.claims --workdir isoflop=runs/iso_s0 --workdir isoflop=runs/iso_s1
    python -m benchmarks.claims --run --study isoflop --out runs/claims   # train what is missing, then check

A claim is one number a study's cpu preset produced (an exponent, an error, a loss), the value the
docs quote (the mean over the seeds it was measured with), the spread over those seeds, and a
tolerance: a rerun of the same preset holds the claim when its value lies within the tolerance of
the quoted one. Tolerances are set from the measured seed spread (at least twice the largest
deviation of a seed from the mean) and widened where the number is known to move across machines
(XLA's CPU numerics differ between processors in the last bits, and training amplifies them:
`machines` says so per claim). A claim whose seeds disagree in sign or conclusion is not made.

The docs tie each quoted number to its claim with a comment right after the number,
``0.518 <!-- claim: isoflop.cpu.approach2_a -->``; `tests/test_claims.py` checks that every tagged
number in README.md and docs/ equals the claim's quoted value as printed by `Claim.quoted`, so the
docs and this file cannot drift apart.

Each workdir given with ``--workdir STUDY=PATH`` is one seed's run of that study's preset (several
per study: one per seed). ``--run`` trains the studies that have no workdir into ``--out``, one
workdir per seed the claims were measured with (the commands `--list` prints; each cpu preset costs
10-13 CPU-minutes per seed). Exit status: 0 when every checked claim holds, 1 when one does not,
2 for bad arguments (one line).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

# ----------------------------------------------------------------------------- the studies
# study -> (command with {workdir} and {seed}, seeds the claims were measured with). The test-time
# study has no claims yet: its numbers in the docs are one seed, quoted with the values a second
# machine gave (docs/reproducibility.md); a second seed of it is the next step.
STUDIES = {
    "isoflop": ("python -m experiments.isoflop_chinchilla --workdir {workdir} --preset cpu --set seeds={seed} "
                "--set rung_budgets=4e12", (0, 1)),
    "quantization": ("python -m experiments.quantization_degradation --workdir {workdir} --preset cpu --set seeds={seed}",
                     (0, 1)),
}


# ----------------------------------------------------------------------------- readers
def fit_param(file: str, name: str) -> Callable[[Path], float]:
    """A fitted parameter from ``fits/<file>.json``."""
    def read(workdir: Path) -> float:
        import scaling
        return float(scaling.load(workdir / "fits" / f"{file}.json").params[name])
    return read


def json_value(file: str, *keys) -> Callable[[Path], float]:
    """A number inside a JSON file of the workdir (``analysis.json``, ``rung.json``)."""
    def read(workdir: Path) -> float:
        value = json.loads((workdir / file).read_text())
        for key in keys:
            value = value[key]
        return float(value)
    return read


def table_value(file: str, fn: Callable[[pd.DataFrame], float]) -> Callable[[Path], float]:
    """``fn`` of a CSV table of the workdir (``results.csv``, ``ptq.csv``, ``counts.csv``)."""
    def read(workdir: Path) -> float:
        return float(fn(pd.read_csv(workdir / file)))
    return read


# ----------------------------------------------------------------------------- claims
@dataclasses.dataclass(frozen=True)
class Claim:
    """One quoted number. ``value``: the mean over the study's seeds (the docs print it with
    ``fmt``); ``spread``: the seeds' values; ``tolerance``: how far a rerun may land from ``value``
    and still hold it; ``machines``: a note where the number is known to move across processors."""

    id: str
    study: str
    what: str
    read: Callable[[Path], float]
    value: float
    tolerance: float
    fmt: str = "{:.3f}"
    spread: tuple[float, ...] = ()
    machines: str = ""

    def quoted(self) -> str:
        """The number as the docs print it."""
        return self.fmt.format(self.value)

    def holds(self, measured: float) -> bool:
        return math.isfinite(measured) and abs(measured - self.value) <= self.tolerance


CLAIMS: list[Claim] = []  # filled below, study by study


def claim(**kw) -> Claim:
    c = Claim(**kw)
    if c.study not in STUDIES:
        raise ValueError(f"claim {c.id}: unknown study {c.study!r}; known: {sorted(STUDIES)}")
    if any(o.id == c.id for o in CLAIMS):
        raise ValueError(f"claim {c.id}: declared twice")
    CLAIMS.append(c)
    return c


def by_id(claim_id: str) -> Claim:
    for c in CLAIMS:
        if c.id == claim_id:
            return c
    raise KeyError(f"no claim {claim_id!r}; `python -m benchmarks.claims --list` lists them")


# ----------------------------------------------------------------------------- isoflop (cpu)
# 25 byte-level models of 5k-160k parameters, 5 budgets 6.25e10-1e12 FLOPs ("6N"); seeds 0 and 1
# (seed s: train.seed = s, data.shuffle_seed + s), measured 2026-12-06 on the 2-core machine (seed
# 0 reproduced the 2026-12-04 run's numbers to the printed digit; another processor gave Approach
# 2's a = 0.519 for seed 0). Held out: the largest budget, each approach refitted on the other four.
# Tolerances: at least twice a seed's deviation from the mean, at least 0.01 for an exponent. Not
# claimed, because a second seed reversed it: which approach predicts the held-out budget best
# (seed 0: Approach 2, +0.85%; seed 1: Approach 3, +0.6%).
_A = lambda i, key="a": json_value("analysis.json", "approaches", str(i), "exponents", key)  # noqa: E731
_X = lambda i, key: json_value("analysis.json", "extrapolation", "predictions", str(i), key)  # noqa: E731


def _tokens_per_param(agg):
    def read(workdir: Path) -> float:
        budgets = json.loads((workdir / "analysis.json").read_text())["approaches"]["2"]["budgets"]
        return agg(b["tokens_per_param"] for b in budgets)
    return read


ISOFLOP = [
    claim(id="isoflop.cpu.approach1_a", study="isoflop", what="Approach 1's a (N_opt ∝ C^a)", read=_A(1), fmt="{:.3f}",
          value=0.4707305036045965, spread=(0.4674988638020625, 0.4739621434071305), tolerance=0.01),
    claim(id="isoflop.cpu.approach2_a", study="isoflop", what="Approach 2's a (parabola minima)", read=_A(2), fmt="{:.3f}",
          value=0.5247962068342289, spread=(0.5182370446190562, 0.5313553690494015), tolerance=0.015),
    claim(id="isoflop.cpu.approach3_a", study="isoflop", what="Approach 3's a (parametric L(N, D))", read=_A(3), fmt="{:.3f}",
          value=0.5684873651632643, spread=(0.5666587338356605, 0.5703159964908681), tolerance=0.01),
    claim(id="isoflop.cpu.tokens_per_param_min", study="isoflop", what="fewest tokens per parameter at a budget's parabola minimum", read=_tokens_per_param(min), fmt="{:.0f}",
          value=47.90871008931927, spread=(55.261389238298584, 40.55603094033996), tolerance=15),
    claim(id="isoflop.cpu.tokens_per_param_max", study="isoflop", what="most tokens per parameter at a budget's parabola minimum", read=_tokens_per_param(max), fmt="{:.0f}",
          value=61.80102785269368, spread=(62.21251322390271, 61.38954248148464), tolerance=2),
    claim(id="isoflop.cpu.heldout_loss", study="isoflop", what="optimal loss of the held-out largest budget (its parabola minimum)", read=json_value("analysis.json", "extrapolation", "reference", "loss"), fmt="{:.3f}",
          value=1.3565021465802554, spread=(1.3710145038813957, 1.3419897892791148), tolerance=0.03),
    claim(id="isoflop.cpu.approach2_heldout_error", study="isoflop", what="Approach 2's error on the held-out optimal loss", read=_X(2, "loss_rel_error"), fmt="{:+.1%}",
          value=0.014543046822546923, spread=(0.008486537075699019, 0.020599556569394828), tolerance=0.015),
    claim(id="isoflop.cpu.approach3_heldout_error", study="isoflop", what="Approach 3's error on the held-out optimal loss", read=_X(3, "loss_rel_error"), fmt="{:+.1%}",
          value=0.018285432720298034, spread=(0.03042243075233997, 0.006148434688256099), tolerance=0.025),
    claim(id="isoflop.cpu.approach1_heldout_error", study="isoflop", what="Approach 1's error on the held-out optimal loss", read=_X(1, "loss_rel_error"), fmt="{:+.1%}",
          value=0.08516481441207835, spread=(0.0636330875859561, 0.1066965412382006), tolerance=0.045),
]


# The ladder's prediction rung (--set rung_budgets=4e12, 4x the largest budget): the model Approach
# 2's N_opt(C) calls compute-optimal (108k parameters with seed 0, 130k with seed 1), trained, and
# every law's prediction of its loss made before it was trained (rung.json). Both seeds: every law
# over-predicts; Approach 1's band misses, Approaches 2 and 3 cover.
def _rung(key=None, field="rel_error"):
    def read(workdir: Path) -> float:
        row = json.loads((workdir / "rung.json").read_text())["rows"][0]
        return float(row["eval_loss"] if key is None else row["predictions"][key][field])
    return read


RUNG = [
    claim(id="isoflop.cpu.rung_loss", study="isoflop", what="measured loss of the rung at 4e12 FLOPs",
          read=_rung(), fmt="{:.3f}", value=1.229751128980419,
          spread=(1.250815955793708, 1.2086863021671301), tolerance=0.045),
    claim(id="isoflop.cpu.rung_approach2_error", study="isoflop", fmt="{:+.1%}", read=_rung("approach2_loss_opt"),
          what="Approach 2's L_opt(C) error on the rung's loss (predicted before it was trained)",
          value=0.04843726433758022, spread=(0.0455815087559055, 0.051293019919254945), tolerance=0.02),
    claim(id="isoflop.cpu.rung_approach3_error", study="isoflop", fmt="{:+.1%}", read=_rung("approach3_loss_opt"),
          what="Approach 3's L_opt(C) error on the rung's loss", value=0.025954871890608744, spread=(0.03278226556296415, 0.019127478218253335),
          tolerance=0.02),
    claim(id="isoflop.cpu.rung_approach1_error", study="isoflop", fmt="{:+.1%}", read=_rung("approach1_loss_opt"),
          what="Approach 1's L_opt(C) error on the rung's loss", value=0.07575624400120762, spread=(0.05779780304123472, 0.09371468496118052),
          tolerance=0.04),
]


# ----------------------------------------------------------------------------- quantization (cpu)
# 10 float runs + 13 QAT runs of 11k-59k parameters, 168 PTQ measurements on 65,534 held-out tokens;
# seeds 0 and 1, both measured 2026-12-06 on the 2-core machine (seed 0 reproduced the 2026-12-04
# numbers to the printed digit).
# seed 0, seed 1 of each quantity (fits/*.json and analysis.json of the two workdirs)
_Q0 = {"gamma": 4.76280011130458, "beta": 0.827009045838641, "alpha": 0.19878123332574926,
       "heldout": 3.5451299827291667, "gamma_w": 2.4141532931982677}
_Q1 = {"gamma": 4.815645987195318, "beta": 0.844829199780815, "alpha": 0.27614302840062943,
       "heldout": 1.473312359733419, "gamma_w": 2.1870960647622137}
_FLOOR = {"gamma": 0.15, "beta": 0.05, "alpha": 0.05, "heldout": 0.5, "gamma_w": 0.3}
# (mean, seeds, tolerance = twice a seed's deviation from the mean, at least the floor)
QV = {k: ((_Q0[k] + _Q1[k]) / 2, (_Q0[k], _Q1[k]), max(abs(_Q0[k] - _Q1[k]), _FLOOR[k])) for k in _Q0}


def _held_out_median(law: str):
    def read(workdir: Path) -> float:
        rows = json.loads((workdir / "analysis.json").read_text())["held_out"]
        errors = sorted(abs(r["rel_error"]) for r in rows if r["law"] == law and r.get("rel_error") is not None)
        if not errors:
            raise ValueError(f"no held-out predictions of {law} in {workdir / 'analysis.json'}")
        mid = len(errors) // 2
        return errors[mid] if len(errors) % 2 else 0.5 * (errors[mid - 1] + errors[mid])
    return read


QUANTIZATION = [
    claim(id="quantization.cpu.gamma", study="quantization", read=fit_param("ptq_degradation", "gamma"),
          what="ptq_degradation's gamma: delta = k D^beta / (N^alpha P^gamma) (Ouyang et al. 2024 Eq. 8)",
          fmt="{:.2f}", value=QV["gamma"][0], spread=QV["gamma"][1], tolerance=QV["gamma"][2]),
    claim(id="quantization.cpu.beta", study="quantization", read=fit_param("ptq_degradation", "beta"),
          what="ptq_degradation's beta (training tokens)", fmt="{:.2f}", value=QV["beta"][0],
          spread=QV["beta"][1], tolerance=QV["beta"][2]),
    claim(id="quantization.cpu.alpha", study="quantization", read=fit_param("ptq_degradation", "alpha"),
          what="ptq_degradation's alpha (parameters)", fmt="{:.2f}", value=QV["alpha"][0],
          spread=QV["alpha"][1], tolerance=QV["alpha"][2]),
    claim(id="quantization.cpu.heldout_median_error", study="quantization", fmt="{:.0%}",
          read=_held_out_median("ptq_degradation"),
          what="ptq_degradation's median |error| on each size's most-trained run (refitted without it)",
          value=QV["heldout"][0], spread=QV["heldout"][1], tolerance=QV["heldout"][2]),
    claim(id="quantization.cpu.precision_weights_gamma_w", study="quantization",
          read=fit_param("precision_weights", "gamma_w"), what="precision_weights' gamma_w (bits), weight QAT",
          fmt="{:.2f}", value=QV["gamma_w"][0], spread=QV["gamma_w"][1], tolerance=QV["gamma_w"][2]),
]


# ----------------------------------------------------------------------------- checking
def check(workdirs: dict[str, list[Path]], claims: list[Claim] | None = None) -> list[dict]:
    """One row per (claim, workdir): the measured value and whether it holds. A claim whose study
    has no workdir gets one row with ``holds=None``; a value that cannot be read holds False."""
    rows = []
    for c in CLAIMS if claims is None else claims:
        dirs = workdirs.get(c.study, [])
        if not dirs:
            rows.append({"id": c.id, "workdir": None, "measured": None, "holds": None, "error": "no workdir"})
        for workdir in dirs:
            try:
                measured, error = c.read(Path(workdir)), ""
            except (OSError, KeyError, ValueError, IndexError) as e:
                measured, error = float("nan"), f"{type(e).__name__}: {e}"
            rows.append({"id": c.id, "workdir": str(workdir), "measured": measured,
                         "holds": c.holds(measured), "error": error})
    return rows


def format_list() -> str:
    lines = []
    for c in CLAIMS:
        spread = ", ".join(c.fmt.format(v) for v in c.spread)
        lines.append(f"{c.id}  {c.quoted()} ± {c.fmt.format(c.tolerance).lstrip('+')}  [seeds: {spread}]  {c.what}"
                     + (f"  ({c.machines})" if c.machines else ""))
    for study, (command, seeds) in STUDIES.items():
        lines.append(f"# {study}: " + command.format(workdir=f"runs/{study}_s{{seed}}", seed="{seed}")
                     + f"  for seed in {list(seeds)}")
    return "\n".join(lines)


def train_missing(studies: list[str], out: Path, python: str = sys.executable) -> dict[str, list[Path]]:
    """Train every seed of each study under ``out/<study>_s<seed>`` (skip-finished: a finished
    workdir costs only its analysis) and return the workdirs."""
    workdirs = {}
    for study in studies:
        command, seeds = STUDIES[study]
        workdirs[study] = []
        for seed in seeds:
            workdir = out / f"{study}_s{seed}"
            argv = shlex.split(command.format(workdir=workdir, seed=seed))
            argv[0] = python
            print("+ " + shlex.join(argv), flush=True)
            if subprocess.run(argv).returncode not in (0,):
                print(f"claims: {study} seed {seed} failed; its claims will not hold", file=sys.stderr)
            workdirs[study].append(workdir)
    return workdirs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.claims", description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="print every claim and exit")
    parser.add_argument("--workdir", action="append", default=[], metavar="STUDY=PATH",
                        help=f"a finished run of a study's preset, one per seed; studies: {', '.join(STUDIES)}")
    parser.add_argument("--study", action="append", default=[], help="check only these studies")
    parser.add_argument("--run", action="store_true", help="train the studies that have no --workdir")
    parser.add_argument("--out", default="runs/claims", help="where --run trains (default runs/claims)")

    def fail(message: str) -> int:
        print(f"python -m benchmarks.claims: error: {message}", file=sys.stderr)
        return 2

    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    if args.list:
        print(format_list())
        return 0
    workdirs: dict[str, list[Path]] = {}
    for spec in args.workdir:
        study, sep, path = spec.partition("=")
        if not sep or study not in STUDIES:
            return fail(f"--workdir {spec!r}: expected STUDY=PATH with STUDY one of {', '.join(STUDIES)}")
        if not Path(path).is_dir():
            return fail(f"--workdir {spec!r}: {path} is not a directory")
        workdirs.setdefault(study, []).append(Path(path))
    for study in args.study:
        if study not in STUDIES:
            return fail(f"--study {study!r}: one of {', '.join(STUDIES)}")
    studies = args.study or list(STUDIES)
    if args.run:
        workdirs.update(train_missing([s for s in studies if s not in workdirs], Path(args.out)))
    claims = [c for c in CLAIMS if c.study in studies]
    rows = check(workdirs, claims)
    checked = [r for r in rows if r["holds"] is not None]
    for r in rows:
        c = by_id(r["id"])
        if r["holds"] is None:
            status, got = "not checked", "(no workdir: give --workdir or --run)"
        else:
            status = "holds" if r["holds"] else "FAILS"
            got = f"{c.fmt.format(r['measured'])} in {r['workdir']}" + (f" ({r['error']})" if r["error"] else "")
        print(f"{status:11s} {c.id}: {c.quoted()} ± {c.fmt.format(c.tolerance).lstrip('+')}, measured {got}")
    failed = sum(not r["holds"] for r in checked)
    print(f"claims: {len(checked) - failed} of {len(checked)} checks hold"
          + (f", {failed} fail" if failed else "") + f"; {len(rows) - len(checked)} not checked")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
