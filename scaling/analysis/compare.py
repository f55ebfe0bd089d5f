"""Compare two training recipes by the compute one needs to match the other (`compare`).

Two tables of runs (N, D or C, loss), one per recipe, are fitted *jointly* by one loss law with a
shared irreducible loss E (a recipe changes how fast loss falls, not the entropy of the text),
through the one engine (`scaling.fit`, float64, bootstrap). Two forms:

- ``form="free"`` (default): ``L_r = E + A_r / N^alpha_r + B_r / D^beta_r`` for r = a, b (9
  parameters). The multipliers then depend on scale, and the two recipes' compute-optimal
  frontiers may cross.
- ``form="parameters"``: recipe b is recipe a with m_N times the effective parameters and the
  same tokens, ``L_b(N, D) = L_a(m_N N, D)`` (6 parameters; Kumar et al. 2024's N_eff for
  quantization-aware training of the weights). Identified when recipe b's runs keep D a fixed
  multiple of N, where m_N and m_D of the efficiency form trade off against each other.
- ``form="efficiency"``: recipe b is recipe a with multiplicatively more effective parameters and
  tokens, ``L_b(N, D) = L_a(m_N N, m_D D)``, i.e. shared exponents (7 parameters). The multipliers
  are then constants. One recipe may then have as few as 2 runs (say, a QAT format trained at
  three sizes beside a float grid): the other's runs (at least 6) fix the law, the few runs fix
  m_N and m_D.

From the joint fit, on each recipe's compute-optimal frontier under ``C = k N D`` (Hoffmann et
al. 2022, Eq. 4: ``L*_r(C) = E + K_r (C/k)^-gamma_r``):

- **compute multiplier** of b over a at compute C: ``m(C) = C_a(L*_b(C)) / C``, the compute recipe
  a needs to reach the loss recipe b reaches with C (> 1: b is better). A band over the bootstrap
  draws (`Comparison.compute_multiplier`); the bootstrap resamples each recipe's runs on its own
  (stratified, ``scaling.fit(strata=...)``), so every resample keeps both recipes;
- **parameter and data multipliers**: the N (or D) recipe a needs for its parameter (data) term
  to equal recipe b's at N (D) (`Comparison.parameter_multiplier`, `Comparison.data_multiplier`);
- **crossover**: the compute where the frontiers cross (``m = 1``), when they do within the range
  asked about (`Comparison.crossover`);
- **residual diagnostics** (`Comparison.diagnostics`): per recipe, the RMS log residual of the
  joint fit beside that of a separate fit of the recipe alone (a shared E that does not hold shows
  up as a joint fit much worse than the separate ones), and when the tables give the standard
  error of each loss (``sem`` column), chi-square = sum((loss - fit)/sem)^2 against its degrees
  of freedom: a reduced chi-square well above 1 (small p-value) is lack of fit beyond noise.

OLMo-core's model ladder (``model_ladder/laws.py``) compares ladders the same way: a shared
irreducible loss, the effective compute multiplier and the crossover.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Mapping

import jax.numpy as jnp
import numpy as np

from scaling.fitting.fitted import Band, FittedLaw
from scaling.fitting.fitter import fit
from scaling.laws.law import Law, Param, logsumexp
from scaling.laws.loss import chinchilla_frontier

FORMS = ("free", "efficiency", "parameters")
_CHIN = ("E", "A", "B", "alpha", "beta")


# ---------------------------------------------------------------------------------- joint laws

def _sel(x, pa, pb):
    return jnp.where(x["recipe"] > 0.5, pb, pa)


def _free_terms(p, x):
    lN, lD = jnp.log(x["N"]), jnp.log(x["D"])
    la = _sel(x, jnp.log(p["A_a"]) - p["alpha_a"] * lN, jnp.log(p["A_b"]) - p["alpha_b"] * lN)
    lb = _sel(x, jnp.log(p["B_a"]) - p["beta_a"] * lD, jnp.log(p["B_b"]) - p["beta_b"] * lD)
    return la, lb


def _free_log(p, x):
    la, lb = _free_terms(p, x)
    return logsumexp(la, lb, jnp.log(p["E"]) + 0.0 * la)


def _free(p, x):
    return jnp.exp(_free_log(p, x))


def _eff_log(p, x):
    r = x["recipe"] > 0.5
    lN = jnp.log(x["N"]) + jnp.where(r, jnp.log(p["m_N"]), 0.0)
    lD = jnp.log(x["D"]) + jnp.where(r, jnp.log(p["m_D"]), 0.0)
    return logsumexp(jnp.log(p["A"]) - p["alpha"] * lN, jnp.log(p["B"]) - p["beta"] * lD,
                     jnp.log(p["E"]) + 0.0 * lN)


def _eff(p, x):
    return jnp.exp(_eff_log(p, x))


_COMMON = dict(covariates=("N", "D", "recipe"), target="loss", positive=("N", "D", "loss"),
               objective="huber_log",
               objective_source="Huber (delta = 1e-3) on log loss, as the chinchilla law it extends "
                                "(Hoffmann et al. 2022, Sec. 3.3; Besiroglu et al. 2024, Sec. 2)")

JOINT_FREE = Law(
    name="compare_free",
    params=(Param("E", "log", doc="irreducible loss, shared"),
            Param("A_a", "log"), Param("B_a", "log"), Param("alpha_a"), Param("beta_a"),
            Param("A_b", "log"), Param("B_b", "log"), Param("alpha_b"), Param("beta_b")),
    fn=_free, log_fn=_free_log,
    formula="L_r(N, D) = E + A_r / N^alpha_r + B_r / D^beta_r, r = a (recipe = 0), b (recipe = 1); E shared",
    citation="Hoffmann et al. 2022, Eq. 2, per recipe with a shared E (as OLMo-core's model ladder "
             "compares two ladders)",
    **_COMMON)

JOINT_EFFICIENCY = Law(
    name="compare_efficiency",
    params=(Param("E", "log", doc="irreducible loss, shared"), Param("A", "log"), Param("B", "log"),
            Param("alpha"), Param("beta"),
            Param("m_N", "log", grid=(0.5, 1.0, 2.0), doc="parameter efficiency of b over a"),
            Param("m_D", "log", grid=(0.5, 1.0, 2.0), doc="data efficiency of b over a")),
    fn=_eff, log_fn=_eff_log,
    formula="L_a(N, D) = E + A / N^alpha + B / D^beta;  L_b(N, D) = L_a(m_N N, m_D D)",
    citation="Hoffmann et al. 2022, Eq. 2, with multiplicative parameter and data efficiencies of "
             "recipe b over recipe a",
    **_COMMON)

def _par_log(p, x):
    return _eff_log({**p, "m_D": 1.0}, x)


def _par(p, x):
    return jnp.exp(_par_log(p, x))


JOINT_PARAMETERS = Law(
    name="compare_parameters",
    params=(Param("E", "log", doc="irreducible loss, shared"), Param("A", "log"), Param("B", "log"),
            Param("alpha"), Param("beta"),
            Param("m_N", "log", grid=(0.5, 1.0, 2.0), doc="parameter efficiency of b over a")),
    fn=_par, log_fn=_par_log,
    formula="L_a(N, D) = E + A / N^alpha + B / D^beta;  L_b(N, D) = L_a(m_N N, D)",
    citation="Hoffmann et al. 2022, Eq. 2, with a multiplicative parameter efficiency of recipe b over "
             "recipe a (Kumar et al. 2024, arXiv:2411.04330, Eq. 3: weight-only QAT as effective "
             "parameters N_eff = N (1 - e^{-P_w/gamma_w}))",
    **_COMMON)

JOINT_LAWS = {"free": JOINT_FREE, "efficiency": JOINT_EFFICIENCY, "parameters": JOINT_PARAMETERS}


def recipe_params(form: str, p: Mapping) -> tuple[dict, dict]:
    """Joint-law parameters -> (recipe a's, recipe b's) Chinchilla parameters E, A, B, alpha, beta.

    Works on numbers and on broadcasting arrays (bootstrap draws)."""
    if form == "free":
        return ({"E": p["E"], "A": p["A_a"], "B": p["B_a"], "alpha": p["alpha_a"], "beta": p["beta_a"]},
                {"E": p["E"], "A": p["A_b"], "B": p["B_b"], "alpha": p["alpha_b"], "beta": p["beta_b"]})
    a = {n: p[n] for n in _CHIN}
    m_d = p["m_D"] if form == "efficiency" else 1.0
    b = dict(a, A=p["A"] * p["m_N"] ** -p["alpha"], B=p["B"] * m_d ** -p["beta"])
    return a, b


def _log_compute_multiplier(form, p, C, k):
    """log of C_a(L*_b(C)) / C on the two frontiers (closed form, see the module docstring)."""
    pa, pb = recipe_params(form, p)
    with np.errstate(all="ignore"):
        fa, fb = chinchilla_frontier(pa), chinchilla_frontier(pb)
        log_c = np.log(np.asarray(C, np.float64) / k)
        log_ca = (np.log(fa["loss_coefficient"]) - np.log(fb["loss_coefficient"]) + fb["gamma"] * log_c) / fa["gamma"]
        return log_ca - log_c


def _log_term_multiplier(scale_a, exp_a, scale_b, exp_b, x):
    """log(x_a / x): x_a makes recipe a's term scale_a x_a^-exp_a equal recipe b's scale_b x^-exp_b."""
    with np.errstate(all="ignore"):
        lx = np.log(np.asarray(x, np.float64))
        return (np.log(scale_a) - np.log(scale_b) + exp_b * lx) / exp_a - lx


# ---------------------------------------------------------------------------------- the result

@dataclasses.dataclass
class Comparison:
    """The joint fit of two recipes and what it says (see the module docstring)."""

    fitted: FittedLaw                 # the joint law (covariates N, D, recipe)
    separate: dict                    # {name: FittedLaw | None}: each recipe's chinchilla fit alone (None: < 6 runs)
    form: str
    names: tuple[str, str]
    k: float                          # C = k N D
    compute_range: tuple[float, float]  # the budgets of the two tables (min, max)
    diagnostics: dict

    # -- multipliers
    def compute_multiplier(self, C, level: float | None = 0.95):
        """Compute multiplier of recipe b over recipe a at compute ``C`` (> 1: b needs less compute
        for the same loss); with ``level``, a `Band` over the bootstrap draws."""
        fn = lambda p: np.exp(_log_compute_multiplier(self.form, p, C, self.k))  # noqa: E731
        return self._band(fn, level)

    def parameter_multiplier(self, N, level: float | None = 0.95):
        """How many times more parameters recipe a needs for its parameter term to match recipe b's
        at ``N`` (constant ``m_N`` under ``form="efficiency"``)."""
        def fn(p):
            pa, pb = recipe_params(self.form, p)
            return np.exp(_log_term_multiplier(pa["A"], pa["alpha"], pb["A"], pb["alpha"], N))
        return self._band(fn, level)

    def data_multiplier(self, D, level: float | None = 0.95):
        """How many times more tokens recipe a needs for its data term to match recipe b's at ``D``."""
        def fn(p):
            pa, pb = recipe_params(self.form, p)
            return np.exp(_log_term_multiplier(pa["B"], pa["beta"], pb["B"], pb["beta"], D))
        return self._band(fn, level)

    def frontier_loss(self, C, level: float | None = 0.95) -> dict:
        """``{name: L*_r(C)}``: each recipe's compute-optimal loss at C (with bands when ``level``)."""
        out = {}
        for i, name in enumerate(self.names):
            def fn(p, i=i):
                return chinchilla_frontier(recipe_params(self.form, p)[i], C=np.asarray(C, np.float64), k=self.k)["loss"]
            out[name] = self._band(fn, level)
        return out

    def _band(self, fn, level):
        if level is None:
            return np.asarray(fn(dict(self.fitted.params)), np.float64)
        return self.fitted.band(fn, level)

    def crossover(self, C_range: tuple[float, float] | None = None, level: float = 0.95) -> dict:
        """Where the two frontiers cross (``m(C) = 1``), searched in ``C_range`` (default: the
        tables' budgets from 1/10 of the smallest to 1000x the largest).

        Returns ``{"C": the crossing (None when the fitted frontiers do not cross in the range),
        "lower", "upper": the central ``level`` band over the draws that cross in the range,
        "fraction_of_draws": the share of bootstrap draws that cross in the range, "C_range"}``.
        Under ``form="efficiency"`` or ``"parameters"`` the multiplier is constant and the frontiers
        never cross.
        """
        lo, hi = C_range or (self.compute_range[0] / 10, self.compute_range[1] * 1e3)

        def cross(p):
            pa, pb = recipe_params(self.form, p)
            with np.errstate(all="ignore"):
                fa, fb = chinchilla_frontier(pa), chinchilla_frontier(pb)
                log_c = (np.log(fa["loss_coefficient"]) - np.log(fb["loss_coefficient"])) / (fa["gamma"] - fb["gamma"])
                c = self.k * np.exp(log_c)
            return np.where(np.isfinite(c) & (c >= lo) & (c <= hi), c, np.nan)

        point = float(cross(dict(self.fitted.params)))
        draws, _ = self.fitted.draws()
        out = {"C": None if math.isnan(point) else point, "lower": None, "upper": None,
               "fraction_of_draws": None, "C_range": [float(lo), float(hi)], "level": level}
        if draws is not None:
            values = np.asarray(cross({n: np.asarray(v) for n, v in draws.items()}), np.float64)
            ok = np.isfinite(values)
            out["fraction_of_draws"] = float(ok.mean())
            if ok.sum() >= 2:
                lo_b, hi_b = np.percentile(values[ok], [50 * (1 - level), 50 * (1 + level)])
                out["lower"], out["upper"] = float(lo_b), float(hi_b)
        return out

    def summary(self, C=None, level: float = 0.95) -> "pandas.DataFrame":  # noqa: F821
        """A table of the compute multiplier and its band at budgets ``C`` (default: 7 budgets from
        the smallest budget of the tables to 100x the largest)."""
        import pandas as pd
        C = np.geomspace(self.compute_range[0], 100 * self.compute_range[1], 7) if C is None else np.atleast_1d(C)
        band = self.compute_multiplier(C, level)
        rows = {"C": C, "multiplier": band.value, "lower": band.lower, "upper": band.upper,
                "extrapolated": C > self.compute_range[1]}
        for name, b in self.frontier_loss(C, None).items():
            rows[f"loss_{name}"] = b
        return pd.DataFrame(rows)

    def to_dict(self, level: float = 0.95) -> dict:
        """JSON-ready: the joint fit's file dict, the separate fits' parameters, the multiplier
        table, the crossover and the diagnostics."""
        table = self.summary(level=level)
        return {
            "form": self.form, "recipes": list(self.names), "k": self.k,
            "compute_range": list(self.compute_range),
            "joint_fit": self.fitted.to_dict(),
            "separate_fits": {n: dict(f.params) for n, f in self.separate.items() if f is not None},
            "compute_multiplier": {c: [float(v) if v is not None else None for v in table[c]]
                                   for c in ("C", "multiplier", "lower", "upper")},
            "crossover": self.crossover(level=level),
            "diagnostics": self.diagnostics,
        }

    def __repr__(self) -> str:
        mid = math.sqrt(self.compute_range[0] * self.compute_range[1])
        b = self.compute_multiplier(mid)
        band = "" if b.lower is None else f" [{b.lower:.3g}, {b.upper:.3g}]"
        return (f"Comparison({self.names[1]} over {self.names[0]}, form={self.form}: compute multiplier "
                f"{float(b.value):.3g}{band} at C={mid:.3g})")


# ---------------------------------------------------------------------------------- compare

def _table(data, columns: Mapping[str, str], k: float, name: str, min_runs: int = 6) -> dict:
    cols = {c: columns.get(c, c) for c in ("N", "D", "C", "loss", "sem")}
    available = list(data.keys()) if hasattr(data, "keys") else []
    need = [cols["N"], cols["loss"]]
    missing = [c for c in need if c not in available]
    if missing or (cols["D"] not in available and cols["C"] not in available):
        raise ValueError(f"compare: table {name!r} needs columns N, loss and D or C (mapped by columns=...); "
                         f"missing {missing or [cols['D'] + ' or ' + cols['C']]}, available {available}")
    out = {"N": np.asarray(data[cols["N"]], np.float64), "loss": np.asarray(data[cols["loss"]], np.float64)}
    if cols["D"] in available:
        out["D"] = np.asarray(data[cols["D"]], np.float64)
    else:
        out["D"] = np.asarray(data[cols["C"]], np.float64) / (k * out["N"])
    if cols["sem"] in available:
        out["sem"] = np.asarray(data[cols["sem"]], np.float64)
        if not (np.isfinite(out["sem"]).all() and (out["sem"] > 0).all()):
            raise ValueError(f"compare: table {name!r} has standard errors that are not finite and > 0")
    if len(out["loss"]) < min_runs:
        raise ValueError(f"compare: table {name!r} has {len(out['loss'])} runs; " + (
            "the free form fits a loss law of (N, D) per recipe and needs at least 6 runs per recipe (the "
            "efficiency form needs 2 of one recipe when the other has 6)" if min_runs == 6 else
            f"the efficiency form needs at least {min_runs} runs per recipe"))
    return out


def _coarse_chinchilla_starts() -> dict:
    """Every other value of each chinchilla parameter's default grid: 243 starts over the span of
    its 4,500 (the separate and pooled fits only give the joint fit's starts and reference RMS)."""
    import itertools

    from scaling.laws import get

    law = get("chinchilla")
    rows = np.array(list(itertools.product(*[p.grid[::2] for p in law.params])), np.float64)
    return {name: rows[:, i] for i, name in enumerate(law.param_names)}


def _starts(form: str, sep_a: FittedLaw | None, sep_b: FittedLaw | None, pooled: FittedLaw | None) -> dict:
    """Natural-unit starts for the joint fit, from the separate (and pooled) fits; a recipe with
    too few runs for a fit of its own (efficiency form only) has none."""
    fitted = [f.params for f in (sep_a, sep_b, pooled) if f is not None]
    e_all = [p["E"] for p in fitted]
    es = sorted({*e_all, min(e_all), math.exp(np.mean(np.log(e_all))), 0.9 * min(e_all)})
    rows = []
    if form == "free":
        pa, pb = sep_a.params, sep_b.params
        for e in es:
            rows.append({"E": e, **{f"{n}_a": pa[n] for n in _CHIN[1:]}, **{f"{n}_b": pb[n] for n in _CHIN[1:]}})
        for src in (pa, pb):   # both recipes started from one recipe's fit
            rows.append({"E": src["E"], **{f"{n}_a": src[n] for n in _CHIN[1:]}, **{f"{n}_b": src[n] for n in _CHIN[1:]}})
    else:
        base = pooled.params
        for e in sorted({base["E"], *es}):
            for mn in (0.5, 1.0, 2.0):
                for md in ((0.5, 1.0, 2.0) if form == "efficiency" else (None,)):
                    rows.append({**base, "E": e, "m_N": mn, **({"m_D": md} if md is not None else {})})
    return {n: np.array([r[n] for r in rows]) for n in rows[0]}


def compare(table_a, table_b, *, names: tuple[str, str] = ("a", "b"), form: str = "free",
            columns: Mapping[str, str] | None = None, k: float = 6.0, bootstrap: int = 200, seed: int = 0,
            **fit_kwargs) -> Comparison:
    """Fit two recipes' runs jointly with a shared irreducible loss and compare them.

    Args:
      table_a, table_b: DataFrames (or dicts of arrays) of runs: N, D (or C, then D = C / (k N)),
        loss, and optionally sem (the standard error of each loss) for the chi-square diagnostic.
        At least 6 runs each (free form); the efficiency form needs 2 of one when the other has 6.
      names: the recipes' names, in the order (a, b); multipliers are of b over a.
      form: ``"free"`` (each recipe its own A, B, alpha, beta), ``"efficiency"`` (recipe b is
        recipe a with parameter and data efficiencies m_N, m_D: constant multipliers) or
        ``"parameters"`` (m_N only, m_D = 1).
      columns: maps N, D, C, loss, sem to the tables' column names.
      k: FLOPs per parameter per token, ``C = k N D``.
      bootstrap, seed: the joint fit's bootstrap (its draws give every band).
      fit_kwargs: passed to `scaling.fit` for the joint fit (``objective``, ``delta``, ...).

    Returns a `Comparison`.
    """
    if form not in FORMS:
        raise ValueError(f"compare: form must be one of {FORMS}, got {form!r}")
    if len(names) != 2 or names[0] == names[1]:
        raise ValueError(f"compare: names must be two different names, got {names!r}")
    columns = dict(columns or {})
    min_runs = 6 if form == "free" else 2
    ta, tb = _table(table_a, columns, k, names[0], min_runs), _table(table_b, columns, k, names[1], min_runs)
    if max(len(ta["N"]), len(tb["N"])) < 6:
        raise ValueError(f"compare: tables {names[0]!r} and {names[1]!r} have {len(ta['N'])} and {len(tb['N'])} runs; "
                         "one recipe needs at least 6 to fix the shared loss law")
    with warnings.catch_warnings():   # the separate fits only give starts and a reference RMS
        warnings.simplefilter("ignore")
        # a recipe with fewer than 6 runs (efficiency form) has no fit of its own
        starts = _coarse_chinchilla_starts()
        sep = {n: fit("chinchilla", t, starts=starts) if len(t["N"]) >= 6 else None for n, t in zip(names, (ta, tb))}
        pooled = None
        if form != "free":
            pooled = fit("chinchilla", {c: np.concatenate([ta[c], tb[c]]) for c in ("N", "D", "loss")}, starts=starts)
    joint_data = {c: np.concatenate([ta[c], tb[c]]) for c in ("N", "D", "loss")}
    joint_data["recipe"] = np.concatenate([np.zeros(len(ta["N"])), np.ones(len(tb["N"]))])
    law = JOINT_LAWS[form]
    fitted = fit(law, joint_data, starts=_starts(form, *sep.values(), pooled), bootstrap=bootstrap, seed=seed,
                 strata=joint_data["recipe"],
                 k=k, provenance={"compare": {"recipes": list(names), "form": form}}, **fit_kwargs)
    budgets = k * joint_data["N"] * joint_data["D"]
    diag = _diagnostics(fitted, sep, names, ta, tb)
    return Comparison(fitted=fitted, separate=sep, form=form, names=tuple(names), k=float(k),
                      compute_range=(float(budgets.min()), float(budgets.max())), diagnostics=diag)


def _chi2_sf(chi2: float, dof: int) -> float:
    """P(X > chi2) for X ~ chi-square(dof): the regularized upper incomplete gamma Q(dof/2, chi2/2)."""
    import jax
    from jax.scipy.special import gammaincc
    with jax.enable_x64(True):
        return float(gammaincc(jnp.float64(dof / 2), jnp.float64(chi2 / 2)))


def _diagnostics(fitted: FittedLaw, sep: dict, names, ta: dict, tb: dict) -> dict:
    """Per recipe: RMS and max |log residual| of the joint fit and of the recipe's separate fit,
    and with SEMs the chi-square of the joint fit (see the module docstring)."""
    out = {"recipes": {}, "E_separate": {n: float(f.params["E"]) for n, f in sep.items() if f is not None},
           "E_joint": float(fitted.params["E"])}
    chi2_total, n_total, have_sem = 0.0, 0, True
    for r, (name, t) in enumerate(zip(names, (ta, tb))):
        x = {"N": t["N"], "D": t["D"], "recipe": np.full(len(t["N"]), float(r))}
        pred = fitted.predict(**x, extrapolate=True)
        res = np.log(t["loss"]) - np.log(pred)
        rms_sep = None
        if sep[name] is not None:
            res_sep = np.log(t["loss"]) - np.log(sep[name].predict(N=t["N"], D=t["D"], extrapolate=True))
            rms_sep = float(np.sqrt(np.mean(res_sep ** 2)))
        entry = {"n": int(len(res)), "rms_log_residual": float(np.sqrt(np.mean(res ** 2))),
                 "max_abs_log_residual": float(np.max(np.abs(res))),
                 "rms_log_residual_separate_fit": rms_sep}
        if "sem" in t:
            chi2 = float(np.sum(((t["loss"] - pred) / t["sem"]) ** 2))
            entry["chi2"] = chi2
            chi2_total += chi2
        else:
            have_sem = False
        n_total += len(res)
        out["recipes"][name] = entry
    if have_sem:
        dof = n_total - len(fitted.params)
        out["chi2"] = chi2_total
        out["dof"] = int(dof)
        out["reduced_chi2"] = chi2_total / dof if dof > 0 else None
        out["p_value"] = _chi2_sf(chi2_total, dof) if dof > 0 else None
        out["lack_of_fit"] = bool(out["p_value"] is not None and out["p_value"] < 0.01)
    else:
        out["chi2"] = None
        out["note"] = ("no sem column: lack of fit beyond noise cannot be tested; compare the joint and "
                       "separate RMS log residuals")
    return out


__all__ = ["Band", "Comparison", "FORMS", "JOINT_EFFICIENCY", "JOINT_FREE", "compare", "recipe_params"]
