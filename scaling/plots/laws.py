"""Plots of fitted laws: data with the fitted curve and its bootstrap band, residuals, iso-loss contours.

Matplotlib's object API only: a function given no ``ax`` draws on a new `matplotlib.figure.Figure`
(never pyplot, never a display), and every function returns the Axes it drew on
(``ax.figure`` is the Figure), so the plots work headless in CI and inline in a notebook.

    ax = scaling.plots.plot_law(fitted, df, x="N", hue="C")   # loss vs N, one curve per compute level
    ax.figure.savefig("fit.png")

Bands are central ``level`` percentile bands of the prediction over the fit's parameter draws
(`FittedLaw.predict` with ``level``): bootstrap draws, or a maximum-likelihood fit's profile draws
(`BAND_METHODS`); a fit with standard errors only (e.g. a published fit) gets no band, since
independent-normal draws that ignore parameter correlations give misleading bands.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from scaling.fitting.batched import evaluate

_COMPUTE = "C"  # the virtual covariate C = k N D of laws with an allocation
# bands drawn by plot_law: draws that carry the parameters' correlations (not a table's independent SEs)
BAND_METHODS = ("bootstrap_percentile", "profile_t", "normal_internal_hessian")


def _new_ax(ax):
    if ax is not None:
        return ax
    from matplotlib.figure import Figure
    return Figure(figsize=(6.4, 4.8), layout="constrained").add_subplot()


def _columns(fitted, data, columns: Mapping[str, str] | None, target: str | None) -> tuple[dict, np.ndarray, str]:
    """Covariate arrays (plus C for allocation laws) and the target array from ``data``."""
    law = fitted.law
    columns = dict(columns or {})
    target_col = target or columns.get(law.target, law.target)
    cols = {c: columns.get(c, c) for c in law.covariates}
    available = list(data.keys()) if hasattr(data, "keys") else []
    missing = [c for c in [*cols.values(), target_col] if c not in available]
    if missing:
        raise ValueError(f"data is missing columns {missing} for law {law.name!r} (available: {available}); "
                         "map names with columns={...} or target=...")
    x = {}
    for c, col in cols.items():
        try:
            x[c] = np.asarray(data[col], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"data column {col!r} is not numeric") from None
    y = np.asarray(data[target_col], dtype=np.float64)
    bad = ~np.isfinite(y)
    for c, v in x.items():
        bad |= ~np.isfinite(v)
    if bad.any():
        raise ValueError(f"data has non-finite values in rows {np.flatnonzero(bad)[:10].tolist()}")
    if law.allocation is not None and _COMPUTE not in x:
        n_name, d_name = law.allocation
        x[_COMPUTE] = fitted.k * x[n_name] * x[d_name]
    return x, y, target_col


def _predict(law, params: Mapping[str, np.ndarray], x: Mapping[str, np.ndarray]) -> np.ndarray:
    """The law at every parameter draw: params arrays [S] (or scalars), x arrays [G] -> [S, G] (or [G])."""
    cov = {c: np.asarray(x[c], np.float64) for c in law.covariates}
    if np.ndim(next(iter(params.values()))) == 0:
        return evaluate(law, params, cov)
    return evaluate(law, {n: np.asarray(v, np.float64)[:, None] for n, v in params.items()},
                    {c: v[None, :] for c, v in cov.items()})


def _groups(values: np.ndarray, bins: int, max_groups: int) -> list[tuple[np.ndarray, float]]:
    """[(row mask, representative value)]: unique values, or log-spaced bins when there are many."""
    uniq = np.unique(values)
    if len(uniq) <= max_groups:
        return [(values == u, float(u)) for u in uniq]
    if np.any(values <= 0):
        edges = np.quantile(values, np.linspace(0, 1, bins + 1))
        centre = lambda v: float(np.mean(v))  # noqa: E731
    else:
        edges = np.exp(np.linspace(np.log(values.min()), np.log(values.max()), bins + 1))
        centre = lambda v: float(np.exp(np.mean(np.log(v))))  # noqa: E731
    idx = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, bins - 1)
    return [(idx == i, centre(values[idx == i])) for i in range(bins) if np.any(idx == i)]


def _path(fitted, x_data: dict, mask: np.ndarray, x: str, hue: str | None, hue_value, xs: np.ndarray) -> dict:
    """Covariates along a curve parameterized by ``x`` for one group.

    The hue is held at the group's value; with an allocation, two of (N, D, C) fix the third
    (C = k N D); any other covariate follows a log-linear fit against x within the group (its
    geometric mean when x does not vary there).
    """
    law = fitted.law
    known = {x: xs}
    if hue is not None:
        known[hue] = np.full_like(xs, hue_value)

    def close_allocation():
        if law.allocation is None:
            return
        n_name, d_name = law.allocation
        have = {v for v in (n_name, d_name, _COMPUTE) if v in known}
        if have == {n_name, _COMPUTE}:
            known[d_name] = known[_COMPUTE] / (fitted.k * known[n_name])
        elif have == {d_name, _COMPUTE}:
            known[n_name] = known[_COMPUTE] / (fitted.k * known[d_name])

    close_allocation()
    gx = x_data[x][mask]
    for c in law.covariates:
        if c in known:
            continue
        gc = x_data[c][mask]
        positive = np.all(gc > 0) and np.all(gx > 0)
        if positive and np.ptp(np.log(gx)) > 1e-12 and len(gx) > 1:
            slope, intercept = np.polyfit(np.log(gx), np.log(gc), 1)
            known[c] = np.exp(intercept + slope * np.log(xs))
        else:
            known[c] = np.full_like(xs, np.exp(np.mean(np.log(gc))) if np.all(gc > 0) else np.mean(gc))
        if law.allocation is not None and c in law.allocation:
            close_allocation()
    return {c: known[c] for c in law.covariates}


def _label(name: str) -> str:
    return {"N": "parameters N", "D": "tokens D", "C": "compute C (FLOPs)", "U": "unique tokens U"}.get(name, name)


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def plot_law(fitted, data, x: str = "N", hue: str | None = None, *, ax=None, target: str | None = None,
             columns: Mapping[str, str] | None = None, level: float = 0.95, bins: int = 6,
             max_groups: int = 8, n_grid: int = 100, band: bool = True, cmap: str = "viridis"):
    """Scatter ``data`` (target vs ``x``) with the fitted law and its bootstrap band, one curve per hue group.

    Args:
      fitted: a `FittedLaw`.
      data: DataFrame or dict of arrays with the law's covariates and target (names through ``columns``).
      x: the horizontal axis: a covariate of the law, or ``"C"`` (= k N D) for laws with an allocation.
      hue: groups the points (a covariate or ``"C"``); each group's curve holds the hue at the
        group's value (its geometric mean when values are binned). None: one curve.
      ax: Axes to draw on (default: a new Figure's).
      target, columns: target column and covariate -> column mapping, as in `scaling.fit`.
      level: band level (percentiles of the bootstrap draws).
      bins, max_groups: a hue with more than ``max_groups`` distinct values is binned into ``bins``
        log-spaced bins.
      n_grid: points per curve.
      band: draw the band when the fit has bootstrap draws.

    Returns the Axes: one scatter collection and one line per group (plus one band per group with draws).
    """
    law = fitted.law
    names = set(law.covariates) | ({_COMPUTE} if law.allocation is not None else set())
    for role, v in (("x", x), ("hue", hue)):
        if v is not None and v not in names:
            raise ValueError(f"{role}={v!r} is not a covariate of law {law.name!r}; choose from {sorted(names)}")
    if hue == x:
        raise ValueError("hue must differ from x")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x_data, y, target_col = _columns(fitted, data, columns, target)
    ax = _new_ax(ax)
    import matplotlib

    colormap = matplotlib.colormaps[cmap]
    if hue is None:
        groups = [(np.ones(len(y), bool), None)]
    else:
        groups = _groups(x_data[hue], bins, max_groups)
    hue_vals = [v for _, v in groups if v is not None]
    lo_h, hi_h = (min(hue_vals), max(hue_vals)) if hue_vals else (0.0, 1.0)
    log_hue = bool(hue_vals) and lo_h > 0
    drawn = None   # the band's method (FittedLaw.predict(level=)), once a band is drawn
    scale = np.log if log_hue else (lambda v: v)
    positive_x = bool(np.all(x_data[x] > 0))
    for mask, value in groups:
        if value is None or hi_h == lo_h:
            color = colormap(0.5)
        else:
            t = (scale(value) - scale(lo_h)) / (scale(hi_h) - scale(lo_h))
            color = colormap(0.1 + 0.8 * t)
        label = None if value is None else f"{hue} ~ {_fmt(value)}"
        gx, gy = x_data[x][mask], y[mask]
        ax.scatter(gx, gy, s=14, color=color, alpha=0.8, label=label)
        lo, hi = gx.min(), gx.max()
        xs = np.geomspace(lo, hi, n_grid) if positive_x and lo > 0 and hi > lo else np.linspace(lo, hi, n_grid)
        path = _path(fitted, x_data, mask, x, hue, value, xs)
        covs = {c: path[c] for c in law.covariates}
        if band:
            curve = fitted.predict(level=level, extrapolate=True, **covs)
            ax.plot(xs, curve.value, color=color, lw=1.6)
            if curve.method in BAND_METHODS:
                ax.fill_between(xs, curve.lower, curve.upper, color=color, alpha=0.2, lw=0)
                drawn = curve.method
        else:
            ax.plot(xs, fitted.predict(extrapolate=True, **covs), color=color, lw=1.6)
    if positive_x:
        ax.set_xscale("log")
    ax.set_xlabel(_label(x))
    ax.set_ylabel(target_col)
    title = f"{law.name}: {target_col} vs {x}"
    if drawn is not None:
        title += f" ({int(round(100 * level))}% {'bootstrap' if drawn == 'bootstrap_percentile' else drawn} band)"
    ax.set_title(title, fontsize=10)
    if hue is not None:
        ax.legend(fontsize=7, title=_label(hue), title_fontsize=7)
    return ax


def plot_residuals(fitted, data, x: str | None = None, *, ax=None, target: str | None = None,
                   columns: Mapping[str, str] | None = None, log: bool | None = None):
    """Residuals of ``data`` against the fitted law, with a zero line.

    Residuals are ``log y - log prediction`` (the space of the default Huber-on-log objective) when
    ``log`` (default: the fit's ``residual_space``, else log when all targets are positive), else
    ``y - prediction``. The horizontal axis is the prediction (``x=None``) or a covariate / ``"C"``.

    Returns the Axes (one scatter collection with one point per row of ``data``).
    """
    law = fitted.law
    x_data, y, target_col = _columns(fitted, data, columns, target)
    if x is not None and x not in x_data:
        raise ValueError(f"x={x!r} is not a covariate of law {law.name!r}; choose from {sorted(x_data)}")
    pred = _predict(law, fitted.params, x_data)
    if log is None:
        space = (fitted.fit or {}).get("residual_space")
        log = space == "log" if space else bool(np.all(y > 0) and np.all(pred > 0))
    if log and (np.any(y <= 0) or np.any(pred <= 0)):
        raise ValueError("log residuals need positive targets and predictions; pass log=False")
    resid = np.log(y) - np.log(pred) if log else y - pred
    ax = _new_ax(ax)
    h = pred if x is None else x_data[x]
    ax.scatter(h, resid, s=14, alpha=0.8)
    ax.axhline(0.0, color="k", lw=0.8)
    if np.all(h > 0):
        ax.set_xscale("log")
    ax.set_xlabel(f"predicted {target_col}" if x is None else _label(x))
    ax.set_ylabel(f"log {target_col} - log prediction" if log else f"{target_col} - prediction")
    rms = float(np.sqrt(np.mean(resid ** 2)))
    ax.set_title(f"{law.name} residuals (n = {len(resid)}, RMS = {rms:.3g})", fontsize=10)
    return ax


MARGIN = 1.6   # default axes of plot_isoloss: the fitted data's range widened by this factor each way


def _short(value: float) -> str:
    """``3.2e19`` rather than ``3.2e+19``."""
    text = f"{value:.2g}"
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    return f"{mantissa}e{int(exponent)}"


def _nice_levels(lo: float, hi: float, count: int) -> np.ndarray:
    """About ``count`` round contour levels between lo and hi (steps of 1, 2 or 5 x 10^k)."""
    raw = (hi - lo) / max(count, 1)
    power = 10.0 ** np.floor(np.log10(raw))
    step = min((m * power for m in (1, 2, 5, 10) if m * power >= raw), default=raw)
    return np.arange(np.ceil(lo / step) * step, hi + 0.5 * step, step)


def plot_isoloss(fitted, *, ax=None, N_range=None, D_range=None, budgets=None, levels=None,
                 n_grid: int = 120, n_frontier: int = 60, **fixed):
    """Contours of L(N, D) with the compute-efficient frontier and, optionally, iso-FLOP lines.

    The frontier is ``FittedLaw.compute_optimal`` over budgets spanning the plotted box (so it uses
    the fit's FLOP convention C = k N D). ``budgets`` adds a dashed iso-FLOP line D = C / (k N) per
    budget, labelled with its C, and marks its optimum. Other covariates of the law are held fixed
    via keywords (e.g. ``U=25e9`` for the data-constrained law). Ranges default to the fitted data
    range widened by a factor `MARGIN` each way. Contour levels (``levels``: a count or the values)
    default to the optimal loss at each budget (each contour then touches its iso-FLOP line at the
    optimum), one step beyond at each end; without budgets, about 8 round levels spanning the
    losses the law predicts over the data's box.

    Returns the Axes: contour lines, one frontier line, one dashed line and one marker per budget.
    """
    law = fitted.law
    if law.allocation is None:
        raise ValueError(f"law {law.name!r} has no (N, D) allocation; plot_isoloss needs one")
    n_name, d_name = law.allocation
    ranges = (fitted.data or {}).get("ranges") or {}

    def span(given, name, default):
        if given is not None:
            lo, hi = float(given[0]), float(given[1])
        elif name in ranges:
            lo, hi = ranges[name][0] / MARGIN, ranges[name][1] * MARGIN
        else:
            lo, hi = default
        if not (0 < lo < hi and np.isfinite(hi)):
            raise ValueError(f"{name} range must satisfy 0 < lo < hi, got {(lo, hi)}")
        return lo, hi

    n_lo, n_hi = span(N_range, n_name, (1e7, 1e12))
    d_lo, d_hi = span(D_range, d_name, (1e8, 1e14))
    ns, ds = np.geomspace(n_lo, n_hi, n_grid), np.geomspace(d_lo, d_hi, n_grid)
    nn, dd = np.meshgrid(ns, ds)
    grid = {n_name: nn.ravel(), d_name: dd.ravel()}
    extra = [c for c in law.covariates if c not in law.allocation]
    missing = [c for c in extra if c not in fixed]
    if missing:
        raise ValueError(f"law {law.name!r} needs {missing} held fixed, e.g. plot_isoloss(fitted, {missing[0]}=...)")
    grid.update({c: np.full(nn.size, float(fixed[c])) for c in extra})
    loss = _predict(law, fitted.params, grid).reshape(nn.shape)
    ax = _new_ax(ax)
    finite = loss[np.isfinite(loss)]
    k = fitted.k
    budgets = [] if budgets is None else [float(c) for c in np.atleast_1d(budgets)]
    for c in budgets:
        if not (np.isfinite(c) and c > 0):
            raise ValueError(f"budgets must be positive and finite, got {c}")
    optima = [fitted.compute_optimal(c, **fixed) for c in budgets]
    if levels is None and len(optima) >= 2:
        lv = np.unique([o["loss"] for o in optima])
        step = np.median(np.diff(lv)) if len(lv) > 1 else 0.05 * lv[0]
        lv = np.concatenate([[lv[0] - step], lv, [lv[-1] + step]])
    elif levels is None or np.isscalar(levels):
        lo, hi = np.quantile(finite, [0.02, 0.7])
        lv = _nice_levels(lo, hi, 8 if levels is None else int(levels))
    else:
        lv = np.sort(np.asarray(levels, np.float64))
    lv = lv[(lv > finite.min()) & (lv < finite.max())]
    top = lv.max() + 0.35 * (lv.max() - lv.min()) if len(lv) > 1 else None   # no pale yellow top level
    cs = ax.contour(nn, dd, loss, levels=lv, cmap="viridis", vmax=top, linewidths=0.9)
    ax.clabel(cs, fontsize=7, fmt="%.3f", inline=True)
    c_all = np.geomspace(k * n_lo * d_lo, k * n_hi * d_hi, n_frontier)
    opt = fitted.compute_optimal(c_all, **fixed)
    inside = (opt["N"] >= n_lo) & (opt["N"] <= n_hi) & (opt["D"] >= d_lo) & (opt["D"] <= d_hi)
    ax.plot(opt["N"][inside], opt["D"][inside], color="crimson", lw=2,
            label=f"compute-optimal frontier (C = {fitted.flop_convention})")
    for c, o in zip(budgets, optima):
        ax.plot(ns, c / (k * ns), ls="--", color="0.45", lw=1)
        ax.scatter([o["N"]], [o["D"]], color="crimson", zorder=3, s=25)
        # the label where the line enters the box from the top or the left
        n_in = max(n_lo, c / (k * d_hi))
        if n_in < n_hi:
            ax.annotate(f"C = {_short(c)}", (n_in, c / (k * n_in)), fontsize=7, color="0.3", xytext=(3, -9),
                        textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(n_lo, n_hi)
    ax.set_ylim(d_lo, d_hi)
    ax.set_xlabel(_label(n_name))
    ax.set_ylabel(_label(d_name))
    ax.set_title(f"{law.name}: iso-loss contours of {law.target}"
                 + (" (at each budget's optimal loss)" if levels is None and len(optima) >= 2 else ""), fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    return ax
