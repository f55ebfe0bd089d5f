"""The `Law` object: a named, pure `jnp` function with typed parameters, and the law registry.

A law maps covariates (``N``, ``D``, ``k``, ...) and parameters to a target (``loss``,
``pass_at_k``, ...). Parameters are fitted in an *internal*, unconstrained space and reported in
*natural* units; each `Param` says how the two relate:

- ``identity``: natural = internal (exponents, offsets);
- ``log``:      natural = exp(internal) (positive scales such as A, B, E);
- ``bounded``:  natural = lower + (upper - lower) * sigmoid(internal);
- ``lower``:    natural = lower + exp(internal) (one-sided: a parameter > lower, no upper limit);
- ``upper``:    natural = upper - exp(internal) (one-sided: a parameter < upper).

``Param("alpha", lower=0.0)`` is one-sided (``lower``) and ``Param("p", lower=0, upper=1)`` is
``bounded``: giving a bound picks the transform. Starting grids are given in natural units
(`DEFAULT_GRIDS` when none is given: three decades around 1 for ``log``, the midpoint for
``bounded``, ...); the multistart grid of a law is the Cartesian product of its parameters' grids (Epoch AI's 4,500-start protocol for Chinchilla is exactly such a
product). A user-defined law is a few lines::

    from scaling.laws import Law, Param
    my_law = Law(
        name="my_power_law", target="loss", covariates=("N",),
        params=(Param("E", "log", grid=(1.0, 2.0)), Param("A", "log", grid=(10.0, 1e3)),
                Param("alpha", grid=(0.2, 0.5))),
        fn=lambda p, x: p["E"] + p["A"] * x["N"] ** -p["alpha"],
    )
    scaling.fit(my_law, df)
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

TRANSFORMS = ("identity", "log", "bounded", "lower", "upper")
# default starting grid per transform (natural units; "lower"/"upper" offsets from the bound)
DEFAULT_GRIDS = {"identity": (0.0,), "log": (0.01, 1.0, 100.0), "lower": (0.01, 1.0, 100.0),
                 "upper": (0.01, 1.0, 100.0)}


@dataclasses.dataclass(frozen=True)
class Param:
    """One fitted parameter: its name, how it is constrained, and its starting values."""

    name: str
    transform: str = "identity"
    lower: float | None = None
    upper: float | None = None
    grid: tuple[float, ...] | None = None
    doc: str = ""

    def __post_init__(self):
        if self.transform not in TRANSFORMS:
            raise ValueError(f"Param {self.name!r}: transform {self.transform!r} is not one of {TRANSFORMS}")
        if self.transform == "identity" and (self.lower is not None or self.upper is not None):
            # a bound picks the transform: one-sided or two-sided
            kind = "bounded" if self.lower is not None and self.upper is not None else (
                "lower" if self.lower is not None else "upper")
            object.__setattr__(self, "transform", kind)
        for side in ("lower", "upper"):
            bound = getattr(self, side)
            if bound is not None and not (isinstance(bound, (int, float)) and np.isfinite(bound)):
                raise ValueError(f"Param {self.name!r}: {side} must be a finite number, got {bound!r}")
        if self.transform == "bounded":
            if self.lower is None or self.upper is None or not self.lower < self.upper:
                raise ValueError(f"Param {self.name!r}: 'bounded' needs lower < upper, got {self.lower}, {self.upper}")
        if self.transform in ("lower", "upper") and getattr(self, self.transform) is None:
            raise ValueError(f"Param {self.name!r}: transform {self.transform!r} needs {self.transform}=...")
        if self.transform in ("log", "identity") and (self.lower is not None or self.upper is not None):
            raise ValueError(f"Param {self.name!r}: a {self.transform!r} parameter takes no lower/upper "
                             "(give lower= and/or upper= without a transform for a bounded one)")
        if self.grid is None:
            object.__setattr__(self, "grid", self._default_grid())
        object.__setattr__(self, "grid", tuple(float(g) for g in np.atleast_1d(self.grid)))
        if len(self.grid) == 0:
            raise ValueError(f"Param {self.name!r}: the starting grid is empty")
        for g in self.grid:
            if not self.contains(g):
                raise ValueError(f"Param {self.name!r}: grid value {g} is outside its {self.transform} domain")

    def _default_grid(self) -> tuple[float, ...]:
        """`DEFAULT_GRIDS` for the transform: decades around 1 (``log``), offsets from the bound
        (``lower``, ``upper``), the quartiles and midpoint of the range (``bounded``), 0 (``identity``)."""
        if self.transform == "bounded":
            return tuple(self.lower + f * (self.upper - self.lower) for f in (0.25, 0.5, 0.75))
        if self.transform == "lower":
            return tuple(self.lower + g for g in DEFAULT_GRIDS["lower"])
        if self.transform == "upper":
            return tuple(self.upper - g for g in DEFAULT_GRIDS["upper"])
        return DEFAULT_GRIDS[self.transform]

    def contains(self, value: float) -> bool:
        """Whether a natural value is representable (strictly inside the domain)."""
        if not np.isfinite(value):
            return False
        if self.transform == "log":
            return value > 0
        if self.transform == "bounded":
            return self.lower < value < self.upper
        if self.transform == "lower":
            return value > self.lower
        if self.transform == "upper":
            return value < self.upper
        return True

    def to_natural(self, z):
        """Internal (unconstrained) value -> natural value. Works on jnp and numpy arrays."""
        if self.transform == "log":
            return jnp.exp(z)
        if self.transform == "bounded":
            return self.lower + (self.upper - self.lower) * jax.nn.sigmoid(z)
        if self.transform == "lower":
            return self.lower + jnp.exp(z)
        if self.transform == "upper":
            return self.upper - jnp.exp(z)
        return z

    def to_natural_numpy(self, z):
        """`to_natural` in numpy float64 (no jax, so no float32 outside ``jax.enable_x64``)."""
        z = np.asarray(z, dtype=np.float64)
        if self.transform == "log":
            return np.exp(z)
        # An internal value far out (a parameter the data do not bound, |z| > ~37) rounds onto the
        # bound itself, outside the open domain: the nearest representable value inside is returned.
        if self.transform == "bounded":
            value = self.lower + (self.upper - self.lower) / (1.0 + np.exp(-z))
            return np.clip(value, np.nextafter(self.lower, np.inf), np.nextafter(self.upper, -np.inf))
        if self.transform == "lower":
            return np.maximum(self.lower + np.exp(z), np.nextafter(self.lower, np.inf))
        if self.transform == "upper":
            return np.minimum(self.upper - np.exp(z), np.nextafter(self.upper, -np.inf))
        return z

    def to_internal(self, x):
        """Natural value -> internal value (numpy, for grids and user-given starts)."""
        x = np.asarray(x, dtype=np.float64)
        if self.transform == "log":
            return np.log(x)
        if self.transform == "bounded":
            u = (x - self.lower) / (self.upper - self.lower)
            return np.log(u) - np.log1p(-u)
        if self.transform == "lower":
            return np.log(x - self.lower)
        if self.transform == "upper":
            return np.log(self.upper - x)
        return x


@dataclasses.dataclass(frozen=True, eq=False)   # a law is itself: hashed and compared by identity (jit caches)
class Law:
    """A scaling law: ``target ≈ fn(params, covariates)``.

    Attributes:
      name: registry name (``scaling.laws.get(name)``).
      params: the fitted parameters, in the order used by the engine.
      covariates: names of the input columns, e.g. ``("N", "D")``.
      target: the name of the predicted column, e.g. ``"loss"``.
      fn: ``fn(p, x) -> prediction``; ``p`` maps parameter names to natural-unit jnp scalars,
        ``x`` maps covariate names to jnp arrays (all the same shape). Must be pure ``jnp``.
      log_fn: optional ``log(fn)`` written stably (e.g. log-sum-exp); used by log-space objectives.
      nll: optional per-point negative log-likelihood ``nll(p, x, y) -> array``; a law with one is
        fitted by maximum likelihood by default (e.g. beta-binomial for pass@k).
      objective: default objective of `scaling.fit` for this law: the one its source used.
      objective_source: which objective the law's source fitted with, and where that is stated
        (recorded in every fit's ``fit["objective_source"]``); any other objective is the user's
        explicit choice (``scaling.fit(..., objective=...)``).
      positive: covariates (and the target) that must be > 0 because logs of them are taken.
      allocation: ``(params_covariate, tokens_covariate)`` for loss laws whose compute is
        ``C = k * N * D``; enables compute-optimal helpers. ``None`` for other laws.
      formula, citation: human-readable formula and its source (paper, equation).
      reference: typical natural parameter values (e.g. the paper's fit), used to simulate data.
      design: ``design(rng, n) -> {covariate: np.ndarray}``: a sensible covariate sample of n
        points for simulation studies (parameter recovery, interval coverage).
      simulate: ``simulate(rng, params, x) -> y``: draw noisy targets for covariates ``x``; when
        None, simulation multiplies the prediction by lognormal noise.
      degeneracy: ``degeneracy(x, y) -> None | (kind, message)``, kind ``"error"`` or ``"warning"``:
        data on which the law's fit does not exist or is barely identified (e.g. a pass@k table
        where no problem was ever solved); `scaling.fit` raises the error, or warns and records the
        message in ``fit["degeneracy"]``.
    """

    name: str
    params: tuple[Param, ...]
    covariates: tuple[str, ...]
    target: str
    fn: Callable[[Mapping, Mapping], jnp.ndarray]
    log_fn: Callable[[Mapping, Mapping], jnp.ndarray] | None = None
    nll: Callable[[Mapping, Mapping, jnp.ndarray], jnp.ndarray] | None = None
    objective: str = "huber_log"
    objective_source: str = ""
    positive: tuple[str, ...] | None = None
    allocation: tuple[str, str] | None = None
    formula: str = ""
    citation: str = ""
    reference: Mapping[str, float] | None = None
    design: Callable[[np.random.Generator, int], dict] | None = None
    simulate: Callable[[np.random.Generator, Mapping, Mapping], np.ndarray] | None = None
    degeneracy: Callable[[Mapping, np.ndarray], tuple[str, str] | None] | None = None

    def __post_init__(self):
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"Law {self.name!r}: duplicate parameter names {names}")
        if not self.covariates:
            raise ValueError(f"Law {self.name!r}: no covariates")
        if self.allocation is not None and not set(self.allocation) <= set(self.covariates):
            raise ValueError(f"Law {self.name!r}: allocation {self.allocation} not among covariates {self.covariates}")
        self._trace()

    def _trace(self) -> None:
        """Trace ``fn`` (and ``log_fn``, ``nll``) once, abstractly (`jax.eval_shape`: no computation),
        so that a function jax cannot trace (written with ``np.`` instead of ``jnp.``, or branching
        on a parameter's value in Python) fails here, naming the law, not deep in the solver."""
        p = {n: jax.ShapeDtypeStruct((), jnp.float32) for n in self.param_names}
        x = {c: jax.ShapeDtypeStruct((3,), jnp.float32) for c in self.covariates}
        y = jax.ShapeDtypeStruct((3,), jnp.float32)
        checks = [("fn", self.fn, (p, x)), ("log_fn", self.log_fn, (p, x)), ("nll", self.nll, (p, x, y))]
        for what, f, args in checks:
            if f is None:
                continue
            try:
                out = jax.eval_shape(f, *args)
            except Exception as e:   # noqa: BLE001  (any failure to trace is the user's function's)
                raise ValueError(
                    f"Law {self.name!r}: its {what} cannot be traced by jax ({type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''}). A law is a pure jax function: write it with "
                    f"jax.numpy (jnp.exp, jnp.log, ...) instead of numpy (np.), and without Python if/float() "
                    f"on parameter values (use jnp.where)") from None
            if not hasattr(out, "shape") or out.shape not in ((), (3,)):
                raise ValueError(f"Law {self.name!r}: its {what} must return one array shaped like the covariates "
                                 f"(or a scalar), got {out!r}")

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    @property
    def positive_columns(self) -> tuple[str, ...]:
        """Columns that must be strictly positive (default: all covariates and the target).

        `scaling.fit` requires the target > 0 only where logs of it are taken: under a log
        objective (``huber_log``, ``mse_log``), or when ``positive`` names it."""
        if self.positive is not None:
            return self.positive
        return tuple(self.covariates) + ((self.target,) if self.nll is None else ())

    def natural(self, z) -> dict:
        """Internal parameter vector (last axis = params) -> dict of natural values."""
        return {p.name: p.to_natural(z[..., i]) for i, p in enumerate(self.params)}

    def internal(self, natural: Mapping[str, float]) -> np.ndarray:
        """Dict of natural values -> internal vector (numpy)."""
        missing = set(self.param_names) - set(natural)
        if missing:
            raise ValueError(f"Law {self.name!r}: missing parameters {sorted(missing)}")
        return np.array([p.to_internal(natural[p.name]) for p in self.params], dtype=np.float64)

    def default_grid(self) -> np.ndarray:
        """The Cartesian product of the parameters' grids, internal space, shape [starts, params]."""
        axes = [p.to_internal(np.asarray(p.grid, dtype=np.float64)) for p in self.params]
        return np.array(list(itertools.product(*axes)), dtype=np.float64).reshape(-1, len(self.params))

    def __call__(self, params: Mapping, **covariates):
        """Evaluate the law with natural parameters on covariate arrays (jnp in, jnp out)."""
        missing = set(self.covariates) - set(covariates)
        if missing:
            raise ValueError(f"Law {self.name!r}: missing covariates {sorted(missing)}")
        x = {k: jnp.asarray(covariates[k]) for k in self.covariates}
        return self.fn(dict(params), x)


def logsumexp(*terms):
    """Elementwise ``log(sum_i exp(t_i))`` of broadcasting jnp terms, stable and cheap to differentiate.

    For a law's ``log_fn``: a sum of positive terms, e.g. Chinchilla's
    ``log(E + A N^-alpha + B D^-beta) = logsumexp(log E, log A - alpha log N, log B - beta log D)``
    (Besiroglu et al. 2024's log-sum-exp form), never overflows or loses the small terms::

        law = Law(..., fn=lambda p, x: p["E"] + p["A"] * x["N"] ** -p["alpha"],
                  log_fn=lambda p, x: logsumexp(jnp.log(p["E"]), jnp.log(p["A"]) - p["alpha"] * jnp.log(x["N"])))

    ``m + log(sum_i exp(t_i - m))`` with ``m = max_i t_i`` held constant under differentiation (the
    derivative, ``sum_i softmax_i dt_i``, does not depend on m), written out term by term rather than
    stacked: the solver's Hessian passes through it at every iteration, and the stacked
    `jax.scipy.special.logsumexp` costs about 15-20% more per iteration there. ``m`` falls back to 0
    where it is not finite, so all terms -inf give -inf and a +inf term gives +inf.
    """
    terms = jnp.broadcast_arrays(*terms)
    m = functools.reduce(jnp.maximum, terms)
    m = jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))
    return m + jnp.log(functools.reduce(jnp.add, [jnp.exp(t - m) for t in terms]))


_REGISTRY: dict[str, Law] = {}


def register(law: Law, overwrite: bool = False) -> Law:
    """Add a law to the registry so `get(name)` finds it. Returns the law."""
    if law.name in _REGISTRY and not overwrite:
        raise ValueError(f"a law named {law.name!r} is already registered (pass overwrite=True)")
    _REGISTRY[law.name] = law
    return law


def get(name: str | Law) -> Law:
    """Look up a registered law by name; a `Law` passes through."""
    if isinstance(name, Law):
        return name
    if name not in _REGISTRY:
        raise ValueError(f"unknown law {name!r}; known laws: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def names() -> list[str]:
    """Names of all registered laws, sorted."""
    return sorted(_REGISTRY)
