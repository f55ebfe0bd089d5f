"""What every analyze stage shares: fitted laws written as JSON (fits/<name>.json, `scaling.load`),
figures as PNG (plots/<name>.png), each atomically, locally or on gs://; and a fitted law's
prediction with its band at one point (`predict_with_band`, through `FittedLaw.predict`)."""

from __future__ import annotations

import io as _io
import logging
import warnings
from collections.abc import Callable, Mapping

import numpy as np
from etils import epath

from experiments.harness import io

log = logging.getLogger(__name__)


def write_fits(workdir, laws: Mapping) -> list[epath.Path]:
    """fits/<name>.json for every ``{name: FittedLaw}`` (sorted by name), each through `FittedLaw.save`."""
    paths = []
    for name, law in sorted(laws.items()):
        path = epath.Path(workdir) / "fits" / f"{name}.json"
        law.save(str(path))
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
    """A fitted law's prediction at one point and the central ``level`` band over its parameter
    draws (`FittedLaw.predict` with ``level``; None when the fit carries none), without the
    extrapolation warning: the analyses predict beyond the fitted range on purpose."""
    band = law.predict(level=level, extrapolate=True, **{k: float(v) for k, v in covariates.items()})
    point = float(np.asarray(band.value).reshape(-1)[0])
    if band.lower is None:
        return point, None
    return point, (float(np.asarray(band.lower).reshape(-1)[0]), float(np.asarray(band.upper).reshape(-1)[0]))
