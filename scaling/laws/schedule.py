"""``multi_power``: the loss curve under a learning-rate schedule (Luo et al. 2025).

    law = multi_power_law({"cosine": lrs_a, "wsd": lrs_b}, warmup_steps=10)  # a law bound to them
    df = pd.DataFrame({"schedule": law_index, "step": steps, "loss": losses})
    scaling.fit(law, df, starts=...)

Luo, Wen, Hu, Sun, Liu, Sun, Lyu, Chen 2025, "A Multi-Power Law for Loss Curve Prediction Across
Learning Rate Schedules" (arXiv:2503.12811, ICLR 2025):

    L(t) = L0 + A (S1(t) + S_W)^(-alpha) - LD(t)
    LD(t) = B sum_{k=1..t} (eta_{k-1} - eta_k) G(eta_k^(-gamma) S_k(t)),  S_k(t) = sum_{tau=k..t} eta_tau
    G(x) = 1 - (C x + 1)^(-beta)

with S1(t) the sum of the rates after warmup, S_W that of the warmup, and the sum of LD over the
steps after warmup (eta_0 = the peak at the end of warmup). The formula was checked against the
paper's abstract page (arXiv HTML v1, via a summary that quotes it) and against the authors'
reference implementation (``src/models.py`` of thu-yao-01-luo/MultiPowerLaw: the same L0, A, alpha,
B, C, beta, gamma and the Huber loss on log loss with delta 1e-3 that ``scaling.fit`` uses by
default); the *equation number* in the paper is unverified (the search tool held no full text).
The paper reports predicting held-out schedules' curves within about 0.1-0.2% (its abstract and
the issue that asked for this law; the per-figure numbers were not re-checked).

Unlike the other laws, a point's prediction depends on the whole schedule before it, not on a few
numbers of its own: the law is *bound* to a set of schedules (:func:`multi_power_law`), and its
covariates are ``schedule`` (the index of a schedule in that set) and ``step`` (the number of
optimizer updates done). The registered ``multi_power`` is bound to the three illustrative
schedules of its ``design`` (cosine, wsd, constant over 2,000 steps); a study binds its own.

A schedule the law cannot represent is a ``ValueError`` naming it: a rate that rises after warmup
(the law and its fits are for decaying schedules), or a rate <= 0 after warmup (eta_k^(-gamma)).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from scaling.laws.law import Law, Param, register

LUO_CITATION = ("Luo et al. 2025, 'A Multi-Power Law for Loss Curve Prediction Across Learning Rate "
                "Schedules' (arXiv:2503.12811, ICLR 2025), the multi-power law of Sec. 3 (equation "
                "number unverified); formula checked against the arXiv abstract page's summary and "
                "the authors' reference code (thu-yao-01-luo/MultiPowerLaw, src/models.py)")
FORMULA = ("L(t) = L0 + A (S1(t) + S_W)^(-alpha) - LD(t);  LD(t) = B sum_{k<=t} (eta_{k-1} - eta_k) "
           "G(eta_k^(-gamma) S_k(t)),  S_k(t) = sum_{k<=tau<=t} eta_tau,  G(x) = 1 - (C x + 1)^(-beta)")


def schedule_terms(learning_rates, warmup_steps: int = 0, name: str = "schedule") -> dict:
    """The per-step numbers of one schedule that the law needs (float64, index = step t = 0..T):
    ``cum[t]`` = S1(t) + S_W (sum of the first t rates), ``drop[k]`` = eta_{k-1} - eta_k after
    warmup (0 before), ``eta[k]`` = the rate of update k (1-based; eta[0] unused).

    ``learning_rates[i]``: the rate of the (i+1)-th update. ``ValueError`` (naming ``name`` and
    the step) for a schedule the law cannot represent."""
    lr = np.asarray(learning_rates, np.float64)
    if lr.ndim != 1 or lr.size == 0 or not np.all(np.isfinite(lr)):
        raise ValueError(f"multi_power: schedule {name!r} must be a non-empty 1-D sequence of "
                         "finite learning rates")
    if not 0 <= warmup_steps < lr.size:
        raise ValueError(f"multi_power: schedule {name!r}: warmup_steps={warmup_steps} must be in "
                         f"[0, {lr.size})")
    after = lr[warmup_steps:]
    if np.any(after <= 0):
        k = warmup_steps + int(np.flatnonzero(after <= 0)[0]) + 1
        raise ValueError(f"multi_power: schedule {name!r} has a rate <= 0 at step {k} (after "
                         "warmup); the law needs positive rates (eta^-gamma)")
    first = max(warmup_steps - 1, 0)  # the last warmup rate (the peak) against the ones after it
    seg = lr[first:]
    rises = np.flatnonzero(np.diff(seg) > 0)
    if rises.size:
        i = int(rises[0])
        raise ValueError(f"multi_power: schedule {name!r} rises at step {first + i + 2} "
                         f"({seg[i]:.4g} -> {seg[i + 1]:.4g}) after warmup; the law represents "
                         "schedules that do not increase after warmup")
    eta = np.concatenate([[0.0], lr])  # eta[k]: the rate of update k (1-based)
    drop = np.zeros_like(eta)
    start = first + 2  # drop[k] = eta_{k-1} - eta_k for the updates after warmup
    drop[start:] = eta[start - 1:-1] - eta[start:]
    return {"cum": np.cumsum(eta), "drop": drop, "eta": eta}


def _bind(terms: Sequence[dict]):
    """Tables for a set of schedules: only the steps where some schedule drops are kept."""
    length = max(t["cum"].size for t in terms)

    def pad(a, value):
        return np.concatenate([a, np.full(length - a.size, value)])

    cum = np.stack([pad(t["cum"], t["cum"][-1]) for t in terms])
    drop = np.stack([pad(t["drop"], 0.0) for t in terms])
    eta = np.stack([pad(t["eta"], 1.0) for t in terms])
    cols = np.flatnonzero(np.any(drop != 0, axis=0))
    if cols.size == 0:
        cols = np.array([1])  # no schedule decays: LD = 0 everywhere
    # numpy (float64): constants of the traced law, in the precision the fit runs at
    return {"cum": cum, "drop": drop[:, cols], "eta": np.where(drop[:, cols] != 0, eta[:, cols], 1.0),
            "cum_before": cum[:, cols - 1], "k": cols}


def _make_fn(tables):
    def fn(p, x):
        tab = {k: jnp.asarray(v) for k, v in tables.items()}
        r = jnp.asarray(x["schedule"]).astype(jnp.int32)
        t = jnp.asarray(x["step"]).astype(jnp.int32)
        cum_t = tab["cum"][r, t]
        drop, eta = tab["drop"][r], tab["eta"][r]
        s_k = cum_t[..., None] - tab["cum_before"][r]           # S_k(t), k <= t
        live = (tab["k"] <= t[..., None]) & (drop != 0)
        # parameters may come shaped like the covariates (one per point): a trailing axis for k
        gamma, c, beta = (jnp.asarray(p[k])[..., None] for k in ("gamma", "C", "beta"))
        arg = jnp.where(live, eta ** (-gamma) * s_k, 0.0)
        g = 1.0 - (c * arg + 1.0) ** (-beta)
        ld = p["B"] * jnp.sum(jnp.where(live, drop * g, 0.0), axis=-1)
        return p["L0"] + p["A"] * cum_t ** (-p["alpha"]) - ld
    return fn


PARAMS = (
    Param("L0", "log", grid=(1.0, 3.0), doc="loss floor"),
    Param("A", "log", grid=(0.5, 5.0), doc="scale of the power law in the rate sum"),
    Param("alpha", "log", grid=(0.3, 0.8), doc="exponent of the power law in the rate sum"),
    Param("B", "log", grid=(30.0, 1000.0), doc="scale of the loss drop per unit of rate decay"),
    Param("C", "log", grid=(0.5, 5.0), doc="scale inside G"),
    # bounded: with C -> 0 and beta -> inf (C beta fixed) G tends to 1 - exp(-C beta x), a ridge
    # the solver would follow for its whole iteration budget
    Param("beta", "bounded", lower=0.05, upper=5.0, grid=(0.3, 1.0), doc="exponent of G"),
    Param("gamma", "bounded", lower=0.0, upper=1.5, grid=(0.3, 0.7),
          doc="exponent of the rate in G's argument"),
)


def _design_schedules(steps: int = 2000, peak: float = 3e-3, warmup: int = 50) -> dict:
    t = np.arange(steps, dtype=np.float64)
    frac = np.clip((t + 1 - warmup) / (steps - warmup), 0.0, 1.0)
    floor = 0.1 * peak
    out = {"cosine": floor + (peak - floor) * 0.5 * (1 + np.cos(np.pi * frac)),
           "wsd": peak + (floor - peak) * np.clip((t + 1 - 0.8 * steps) / (0.2 * steps), 0, 1),
           "constant": np.full(steps, peak)}
    for lr in out.values():
        lr[:warmup] = peak * (t[:warmup] + 1) / warmup
    return out


def multi_power_law(schedules: Mapping[str, Sequence[float]] | Sequence[Sequence[float]],
                    warmup_steps: int = 0, *, register_as: str | None = None) -> Law:
    """The multi-power law bound to ``schedules`` (each: the rate of every update; a mapping's
    order gives the ``schedule`` index): covariates ``schedule`` and ``step`` (updates done,
    >= 1). ``warmup_steps``: the leading steps of every schedule that are warmup. Its name is
    "multi_power_bound" (unregistered) unless ``register_as`` registers it under a name."""
    items = list(schedules.items()) if isinstance(schedules, Mapping) else [
        (str(i), s) for i, s in enumerate(schedules)]
    if not items:
        raise ValueError("multi_power: no schedules given")
    terms = [schedule_terms(lr, warmup_steps, name) for name, lr in items]
    tables = _bind(terms)
    lengths = np.array([t["cum"].size - 1 for t in terms], np.float64)

    def design(rng, n):
        r = rng.integers(0, len(items), size=n)
        step = np.floor(rng.uniform(warmup_steps + 1, lengths[r] + 1)).astype(np.int64)
        return {"schedule": r.astype(np.float64), "step": np.minimum(step, lengths[r]).astype(np.float64)}

    # a law bound to other schedules is another law: not the registered name, so that a fitted
    # file of it loads only with the same binding (``scaling.load(path, law=multi_power_law(...))``)
    law = Law(name=register_as or "multi_power_bound", params=PARAMS, covariates=("schedule", "step"),
              target="loss", fn=_make_fn(tables), positive=("step", "loss"), formula=FORMULA,
              objective="huber_log",
              objective_source=("Huber (delta = 1e-3) on log loss: the authors' reference code "
                                "(thu-yao-01-luo/MultiPowerLaw, src/models.py, torch_huber(0.001, "
                                "log(loss) - log(prediction))); the paper's text was not checked"),
              citation=LUO_CITATION,
              # Illustrative values for peak rates ~3e-3 over 2k steps, not a published fit.
              reference={"L0": 2.0, "A": 0.8, "alpha": 0.5, "B": 100.0, "C": 2.0, "beta": 0.5,
                         "gamma": 0.5},
              design=design)
    return register(law) if register_as else law


multi_power = multi_power_law(_design_schedules(), warmup_steps=50, register_as="multi_power")
