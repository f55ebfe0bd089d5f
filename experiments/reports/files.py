"""What every analyze stage shares: fitted laws written as JSON (fits/<name>.json, `scaling.load`),
figures as PNG (plots/<name>.png), each atomically, locally or on gs://; and a fitted law's
prediction with its bootstrap band at one point (`predict_with_band`)."""

from __future__ import annotations

import io as _io
import json
import logging
import warnings
from collections.abc import Callable, Mapping

import numpy as np
from etils import epath

from experiments.harness import io

log = logging.getLogger(__name__)


def write_fits(workdir, laws: Mapping) -> list[epath.Path]:
    """fits/<name>.json for every ``{name: FittedLaw}`` (sorted by name)."""
    paths = []
    for name, law in sorted(laws.items()):
        path = epath.Path(workdir) / "fits" / f"{name}.json"
        io.write_text_atomic(path, json.dumps(law.to_dict(), indent=1, allow_nan=False) + "\n")
        paths.append(path)
    return paths


def write_figures(workdir, figures: Mapping[str, Callable], dpi: int = 110) -> dict[str, epath.Path]:
    """plots/<name>.png for every ``{name: make_figure}``; a figure whose maker raises ValueError
    (nothing to draw) is skipped with a warning. Extrapolation warnings are not the figure's news."""
    paths = {}
    for name, make in figures.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                fig = make()
        except ValueError as err:
            log.warning("plot %s skipped: %s", name, err)
            continue
        buffer = _io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi)
        path = epath.Path(workdir) / "plots" / f"{name}.png"
        io.write_bytes_atomic(path, buffer.getvalue())
        paths[name] = path
    return paths


def predict_with_band(law, level: float = 0.95, **covariates) -> tuple[float, tuple[float, float] | None]:
    """A fitted law's prediction at one point and the central ``level`` band of the law over its
    bootstrap samples (None without samples); extrapolation warnings are silenced, since the
    analyses predict beyond the fitted range on purpose."""
    import jax
    import jax.numpy as jnp

    with warnings.catch_warnings():  # the rung lies beyond the fitted budgets by design
        warnings.simplefilter("ignore", UserWarning)
        point = float(np.asarray(law.predict(**covariates)).reshape(-1)[0])
    if law.samples is None:
        return point, None
    with jax.enable_x64(True):
        params = {k: jnp.asarray(v) for k, v in law.samples.items()}
        x = {k: jnp.full((1,), float(v), jnp.float64) for k, v in covariates.items()}
        draws = np.asarray(law.law.fn(params, x), np.float64).reshape(-1)
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return point, None
    lo, hi = np.percentile(draws, [50 * (1 - level), 50 * (1 + level)])
    return point, (float(lo), float(hi))
