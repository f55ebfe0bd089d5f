"""`evaluate`: a law's function on broadcast numpy inputs (parameter draws x covariates), float64.

Every band (`FittedLaw.predict(..., level=)`), plot curve and analysis prediction evaluates a law
through here: jit-compiled with the law static, inputs flattened and padded to a power of two
(`bucket`), so a few shapes compile per law.
"""

from __future__ import annotations

import functools
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from scaling.fitting.solver import engine_context
from scaling.laws.law import Law


def bucket(n: int, least: int = 32) -> int:
    """The next power of two >= n, at least ``least``: the padded sizes of `fit_many` and `evaluate`."""
    return max(least, 1 << max(0, int(n) - 1).bit_length())


@functools.partial(jax.jit, static_argnums=0)
def _law_fn(law, p, x):
    return law.fn(p, x)


def evaluate(law: Law, params: Mapping[str, np.ndarray], x: Mapping[str, np.ndarray]) -> np.ndarray:
    """``law.fn`` on broadcast numpy inputs, in float64, jit-compiled with the law static.

    Inputs are flattened and padded to a power-of-two length so that few shapes get compiled.
    """
    names_p, names_x = list(params), list(x)
    arrays = np.broadcast_arrays(*[np.asarray(params[k], np.float64) for k in names_p],
                                 *[np.asarray(x[k], np.float64) for k in names_x])
    shape, size = arrays[0].shape, arrays[0].size
    m = bucket(size)
    flat = [np.pad(a.reshape(-1), (0, m - size), constant_values=1.0) for a in arrays]
    with engine_context():
        out = _law_fn(law, {k: jnp.asarray(v) for k, v in zip(names_p, flat[:len(names_p)])},
                      {k: jnp.asarray(v) for k, v in zip(names_x, flat[len(names_p):])})
        out = np.asarray(out, np.float64)
    return out[:size].reshape(shape)
