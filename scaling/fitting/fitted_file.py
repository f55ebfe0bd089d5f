"""The file of a fitted law: its JSON schema, validated on load (`load`, `to_dict`, `from_dict`, `save`).

File format (JSON, validated by `load`; no pickle, no eval)::

    {"schema": "scaling.fitted_law", "schema_version": 4, "law": name,
     "params": {name: float}, "standard_errors": {name: float} | null,
     "samples": {name: [float, ...]} | null, "intervals": {name: [lo, hi]} | null  (95%, default method),
     "acceleration": {name: float} | null  (BCa's jackknife a; new in version 2, version 1 files load),
     "profile": {name: {"values": [...], "signed_root": [...]}} | null  (new in version 3),
     "covariance": [[float, ...], ...] | null  (new in version 4: inverse Hessian of a maximum-
       likelihood fit's NLL at the optimum, internal scale, rows/columns in the law's parameter order),
     "flop_convention": "6N", "data": {...} | null, "fit": {...} | null,
     "provenance": {...} | null, "residuals": [float, ...] | null}

The fit record (``fit``) is a free-form object; since this version it carries ``diagnostics``
(`scaling.fitting.diagnostics`), ``paths`` (the continuation checked against a direct solve),
``objective_chosen_by`` and ``objective_source``. Files written before load unchanged.
"""

from __future__ import annotations

import json
import math
from typing import Mapping

import numpy as np

from scaling import io
from scaling.laws import law as law_lib

SCHEMA = "scaling.fitted_law"
SCHEMA_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)   # 1: no "acceleration"; 1-2: no "profile"; 1-3: no "covariance"
FIELDS = ("schema", "schema_version", "law", "params", "standard_errors", "samples", "intervals",
          "acceleration", "profile", "covariance", "flop_convention", "data", "fit", "provenance", "residuals")


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _finite_float(v, field: str) -> float:
    if not _is_number(v) or not math.isfinite(float(v)):
        raise ValueError(f"{field} must be a finite number, got {v!r}")
    return float(v)


def _float_array(v, field: str) -> np.ndarray:
    if isinstance(v, (list, tuple)) and not all(_is_number(e) for e in v):
        raise ValueError(f"{field} must hold only numbers")
    try:
        arr = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{field} must be an array of numbers") from None
    if arr.ndim != 1 or not np.isfinite(arr).all():
        raise ValueError(f"{field} must be a 1-D array of finite numbers")
    return arr


def _optional_dict(v, field: str) -> dict | None:
    if v is None:
        return None
    if not isinstance(v, Mapping):
        raise ValueError(f"{field} must be an object (dict) or null, got {type(v).__name__}")
    return dict(v)


def to_dict(fitted) -> dict:
    """The JSON-ready dict of the file format of a `FittedLaw` (samples included when present)."""
    intervals = None
    if fitted.samples is not None or fitted.standard_errors:
        intervals = {}
        for n in fitted.params:
            try:
                intervals[n] = list(fitted.interval(n, 0.95))
            except ValueError:
                intervals[n] = None
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "law": fitted.law.name,
        "params": dict(fitted.params),
        "standard_errors": None if fitted.standard_errors is None else dict(fitted.standard_errors),
        "samples": None if fitted.samples is None else {n: v.tolist() for n, v in fitted.samples.items()},
        "intervals": intervals,
        "acceleration": None if fitted.acceleration is None else dict(fitted.acceleration),
        "profile": None if fitted.profile is None else dict(fitted.profile),
        "covariance": None if fitted.covariance is None else fitted.covariance.tolist(),
        "flop_convention": fitted.flop_convention,
        "data": io.jsonable(fitted.data), "fit": io.jsonable(fitted.fit), "provenance": io.jsonable(fitted.provenance),
        "residuals": None if fitted.residuals is None else fitted.residuals.tolist(),
    }


def from_dict(cls, d: Mapping, law: law_lib.Law | None = None):
    """Validate a file dict and build the FittedLaw; ValueError names the offending field.

    ``law`` supplies the Law object for a user-defined law that is not registered.
    """
    if not isinstance(d, Mapping):
        raise ValueError(f"a fitted-law file must hold a JSON object, got {type(d).__name__}")
    unknown = set(d) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)} in fitted-law file")
    missing = [f for f in ("schema", "schema_version", "law", "params") if f not in d]
    if missing:
        raise ValueError(f"fitted-law file is missing fields {missing}")
    if d["schema"] != SCHEMA:
        raise ValueError(f"schema must be {SCHEMA!r}, got {d['schema']!r}")
    v = d["schema_version"]
    if not isinstance(v, int) or isinstance(v, bool) or v not in READABLE_VERSIONS:
        raise ValueError(f"schema_version must be one of {READABLE_VERSIONS}, got {v!r}")
    if v == 1 and d.get("acceleration") is not None:
        raise ValueError("acceleration is not a field of schema_version 1 files (it is new in version 2)")
    if v < 3 and d.get("profile") is not None:
        raise ValueError(f"profile is not a field of schema_version {v} files (it is new in version 3)")
    if v < 4 and d.get("covariance") is not None:
        raise ValueError(f"covariance is not a field of schema_version {v} files (it is new in version 4)")
    if not isinstance(d["law"], str):
        raise ValueError(f"law must be a law name (string), got {d['law']!r}")
    if law is not None and law.name != d["law"]:
        raise ValueError(f"law: the file is for {d['law']!r} but law={law.name!r} was given")
    try:
        the_law = law if law is not None else law_lib.get(d["law"])
    except ValueError as e:
        raise ValueError(f"law: {e} (for a user-defined law pass law=...)") from None
    samples = d.get("samples")
    if samples is not None and not isinstance(samples, Mapping):
        raise ValueError(f"samples must be an object of lists or null, got {type(samples).__name__}")
    residuals = d.get("residuals")
    if residuals is not None and not isinstance(residuals, list):
        raise ValueError(f"residuals must be a list of numbers or null, got {type(residuals).__name__}")
    intervals = d.get("intervals")
    if intervals is not None:
        if not isinstance(intervals, Mapping) or not set(intervals) <= set(the_law.param_names):
            raise ValueError(f"intervals must map parameters of {list(the_law.param_names)} to [lo, hi]")
        for n, iv in intervals.items():
            if iv is not None and not (isinstance(iv, list) and len(iv) == 2
                                       and all(_is_number(x) and math.isfinite(x) for x in iv)):
                raise ValueError(f"intervals[{n!r}] must be [lo, hi] of finite numbers or null, got {iv!r}")
    conv = d.get("flop_convention", "6N")
    if not isinstance(conv, str):
        raise ValueError(f"flop_convention must be a string (a name of scaling.flops.FIT_CONVENTIONS), got {conv!r}")
    params = d["params"]
    if not isinstance(params, Mapping):
        raise ValueError(f"params must be an object, got {type(params).__name__}")
    for name, value in params.items():
        if not _is_number(value):
            raise ValueError(f"params[{name!r}] must be a number, got {value!r}")
    try:
        return cls(the_law, params, samples=samples, standard_errors=d.get("standard_errors"),
                   acceleration=d.get("acceleration"), profile=d.get("profile"), covariance=d.get("covariance"),
                   flop_convention=conv, data=d.get("data"), fit=d.get("fit"),
                   provenance=d.get("provenance"), residuals=residuals)
    except ValueError as e:
        raise ValueError(f"invalid fitted-law file: {e}") from None


def save(fitted, path) -> None:
    """Write ``fitted``'s JSON file atomically (temporary file in the same folder, then os.replace;
    local paths or ``gs://...``), ending with a newline."""
    io.write_text_atomic(path, json.dumps(to_dict(fitted), indent=1, allow_nan=False) + "\n")


def read(path) -> dict:
    """The JSON object of a fitted-law file (non-finite numbers refused); `from_dict` validates it."""
    with open(path) as fh:
        text = fh.read()
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def _reject_constant(name):
    raise ValueError(f"non-finite number {name} in fitted-law file")
