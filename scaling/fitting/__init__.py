"""The fitting engine: one solver behind every fit (`scaling.fit`, the isoFLOP analysis, intervals).

Modules, bottom up:
- `objectives`: the objectives (Huber on log residuals, least squares, likelihoods) as jnp functions;
- `solver`: the vectorized multistart trust-region Newton solver (`run_solver`), float64, CPU by default;
- `continuation`: Huber reached through least squares (`minimize`);
- `data`: input checking (data table, weights, starts);
- `intervals` (bootstrap percentile/BC/BCa, jackknife) and `profile` (profile likelihood);
- `diagnostics`: what a fit is unsure about (edges, bounds, intervals spanning decades);
- `evaluate`: a law on parameter draws x covariates (bands, plots);
- `optimum`: compute-optimal numerics; `fitted_file`: the fitted-law JSON schema; `allocation`:
  compute-optimal questions to a fitted law; `fitted`: the `FittedLaw` container, its bands (`Band`);
- `fitter`: `fit` (multistart checked against a direct solve, bootstrap, profile) and `simulate`;
- `batched`: many small fits in one call, each start on its own dataset (`fit_many`, `fit_with_draws`:
  the isoFLOP analysis).
"""

from scaling.fitting.batched import fit_many, fit_with_draws
from scaling.fitting.continuation import MERGE_DECIMALS, coarse_points, minimize
from scaling.fitting.data import data_sha256, point_weights, prepare_data, starts_to_internal
from scaling.fitting.fitted import Band, FittedLaw, load
from scaling.fitting.fitter import distinct_optima, fit, simulate
from scaling.fitting.objectives import LOG_OBJECTIVES, OBJECTIVES, huber, natural_values, point_losses
from scaling.fitting.solver import (SLOW_RTOL, SLOW_STEPS, _solver, available_cores, compiled_run,
                                    describe_engine, engine_device, own_padded_size, padded_size, run_solver,
                                    slot_count,
                                    trust_region_step)

__all__ = ["Band", "FittedLaw", "LOG_OBJECTIVES", "MERGE_DECIMALS", "OBJECTIVES", "SLOW_RTOL", "SLOW_STEPS",
           "available_cores", "coarse_points", "compiled_run", "data_sha256", "describe_engine",
           "distinct_optima", "engine_device", "fit", "fit_many", "fit_with_draws", "huber", "load",
           "minimize", "natural_values", "own_padded_size", "padded_size", "point_losses", "point_weights", "prepare_data",
           "run_solver", "simulate", "slot_count", "starts_to_internal", "trust_region_step"]
