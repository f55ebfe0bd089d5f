"""The law library: ``scaling.laws.get(name)``, ``scaling.laws.names()``.

Every shipped law (23; ``names()`` lists them sorted) is registered when this package is first
imported, by importing its modules here, so ``names()`` is the same whatever else was imported:
- loss laws (`scaling.laws.loss`): chinchilla, kaplan, power_law, pure_power_law, power_law_2d,
  data_constrained, overtraining, lr_annealing;
- multi_power (`scaling.laws.schedule`): the loss curve under a learning-rate schedule (Luo et al.
  2025), bound to a set of schedules (`multi_power_law`);
- isoflop_parabola (`scaling.laws.parabola`): loss as a parabola in log N along one isoFLOP curve
  (Hoffmann et al. 2022, Approach 2);
- quantization laws (`scaling.laws.quantization`): precision, precision_weights, ptq_precision,
  ptq_degradation, ptq_saturating (this project's form: degradation that saturates in D);
- test-time compute laws (`scaling.laws.pass_at_k`; the old path `scaling.laws.test_time` warns): coverage_power_law, pass_at_k_beta,
  verifier_ceiling, coverage_compute_law (coverage across a family of models), coverage_budget_law
  (coverage over training compute C and samples k, exp(-A C^-a_C k^-b)); and (`scaling.laws.beta_binomial`) pass_at_k_zero_inflated_beta;
- task laws (`scaling.laws.task`): accuracy_sigmoid (Bhagia et al. 2024) and error_exponential
  (Gadre et al. 2024): accuracy or error from a task loss, step 2 of a two-step task prediction.

`scaling.laws.law` defines `Law`, `Param` and `logsumexp` (a stable log of a sum of positive terms,
for a law's ``log_fn``); user laws are registered with `register`.
"""

from scaling.laws.law import Law, Param, get, logsumexp, names, register
from scaling.laws import beta_binomial as _beta_binomial  # noqa: F401  (the shipped laws register themselves once)
from scaling.laws import loss as _loss  # noqa: F401
from scaling.laws import parabola as _parabola  # noqa: F401
from scaling.laws import quantization as _quantization  # noqa: F401
from scaling.laws import pass_at_k as _pass_at_k  # noqa: F401
from scaling.laws import schedule as _schedule  # noqa: F401
from scaling.laws import task as _task  # noqa: F401

__all__ = ["Law", "Param", "get", "logsumexp", "names", "register"]
