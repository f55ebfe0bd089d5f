"""What every analyze stage writes: fitted laws as JSON (fits/<name>.json, `scaling.load`) and
figures as PNG (plots/<name>.png), each atomically, locally or on gs://."""

from __future__ import annotations

import io as _io
import json
import logging
import warnings
from collections.abc import Callable, Mapping

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
