"""The objectives `scaling.fit` minimizes, as jnp functions of a law's internal parameters.

A weighted SUM over points, not a mean; weights default to 1, so with unit weights ``huber_log``
is exactly Epoch AI's ``np.sum(huber(...))`` (Besiroglu et al. 2024, "Chinchilla Scaling: A
replication attempt", arXiv:2404.10102, Sec. 2)::

    F(z) = sum_i w_i * l_i(z)

    huber_log  l_i = huber_delta(log f(x_i) - log y_i)     (default; Epoch's protocol, delta = 1e-3)
    huber      l_i = huber_delta(f(x_i) - y_i)
    mse        l_i = (f(x_i) - y_i)^2
    mse_log    l_i = (log f(x_i) - log y_i)^2
    nll        l_i = law.nll(p, x_i, y_i)                  (default when the law has an nll)

    huber_delta(r) = r^2 / 2 if |r| <= delta else delta * (|r| - delta / 2)   (Huber 1964)

``log f`` uses ``law.log_fn`` when the law has one (e.g. Chinchilla's log-sum-exp form).
Compiled helpers (`natural_values`, `residuals`) are jitted with the law as a static argument,
so jax caches one executable per law and shape (a `Law` hashes by identity).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from scaling.laws import law as law_lib

OBJECTIVES = ("huber_log", "huber", "mse", "mse_log", "nll")
LOG_OBJECTIVES = ("huber_log", "mse_log")


def huber(r, delta):
    """Huber's loss: r^2/2 inside [-delta, delta], delta (|r| - delta/2) outside (C^1 at the kink)."""
    a = jnp.abs(r)
    return jnp.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def log_prediction(law: law_lib.Law, p, x):
    """``log f(p, x)``: the law's ``log_fn`` when it has one, else ``log(fn)``."""
    if law.log_fn is not None:
        return law.log_fn(p, x)
    return jnp.log(law.fn(p, x))


def check(law: law_lib.Law, objective: str) -> None:
    """ValueError unless ``objective`` is one of `OBJECTIVES` that ``law`` supports."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
    if objective == "nll" and law.nll is None:
        raise ValueError(f"objective 'nll' needs a law with an nll; law {law.name!r} has none")


def point_losses(law: law_lib.Law, objective: str):
    """``loss(z, x, y, delta) -> [n]``: the per-point objective terms at internal parameters ``z``.

    For the log objectives ``y`` must already be ``log(target)``; ``delta`` is ignored by the
    non-Huber objectives.
    """
    check(law, objective)

    def loss(z, x, y, delta):
        p = law.natural(z)
        if objective == "huber_log":
            return huber(log_prediction(law, p, x) - y, delta)
        if objective == "mse_log":
            return (log_prediction(law, p, x) - y) ** 2
        if objective == "huber":
            return huber(law.fn(p, x) - y, delta)
        if objective == "mse":
            return (law.fn(p, x) - y) ** 2
        return law.nll(p, x, y)

    return loss


@functools.partial(jax.jit, static_argnums=0)
def _natural(law, z):
    return law.natural(z)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _residual(law, log_space, z, x, y):
    p = law.natural(z)
    return y - (log_prediction(law, p, x) if log_space else law.fn(p, x))


def natural_values(law: law_lib.Law, z) -> dict:
    """Natural parameter values (numpy) of internal vectors ``z`` [..., P].

    Rows of a 2-D ``z`` are padded to a power of two (at least 64), so that the jit cache holds a
    few shapes, not one per number of starts, draws or jackknife refits."""
    z = np.asarray(z, np.float64)
    rows = z.shape[0] if z.ndim == 2 else None
    if rows is not None:
        z = np.concatenate([z, np.zeros((max(64, 1 << max(0, rows - 1).bit_length()) - rows, z.shape[1]))])
    with jax.enable_x64(True):
        out = {k: np.asarray(v) for k, v in _natural(law, jnp.asarray(z)).items()}
    return out if rows is None else {k: v[:rows] for k, v in out.items()}


def residuals(law: law_lib.Law, objective: str, z, x, y) -> np.ndarray:
    """``y - log f`` for the log objectives (``y`` already logged), else ``y - f``, at internal ``z``."""
    n = len(y)
    size = max(64, 1 << max(0, n - 1).bit_length())    # a few padded shapes (copies of point 0)
    pad = lambda v: np.concatenate([np.asarray(v, np.float64), np.full(size - n, np.asarray(v)[0])])  # noqa: E731
    with jax.enable_x64(True):
        xj = {k: jnp.asarray(pad(v)) for k, v in x.items()}
        out = _residual(law, objective in LOG_OBJECTIVES, jnp.asarray(z, jnp.float64), xj, jnp.asarray(pad(y)))
        return np.asarray(out)[:n]
