"""The law library: ``scaling.laws.get(name)``, ``scaling.laws.names()``.

Importing this module registers every shipped law (15; ``names()`` lists them sorted):
- loss laws (`scaling.loss_laws`): chinchilla, kaplan, power_law, pure_power_law,
  power_law_2d, data_constrained, overtraining, lr_annealing;
- quantization laws (`scaling.quantization_laws`): precision, precision_weights,
  ptq_precision, ptq_degradation;
- test-time compute laws (`scaling.test_time`): coverage_power_law, pass_at_k_beta,
  verifier_ceiling.

`scaling.isoflop` registers one more when it is imported: isoflop_parabola (loss as a parabola
in log N along one isoFLOP curve, Hoffmann et al. 2022 Approach 2).
"""

from scaling.law import Law, Param, get, names, register
from scaling import loss_laws as _loss_laws  # noqa: F401  (registers)
from scaling import quantization_laws as _quantization_laws  # noqa: F401  (registers)
from scaling import test_time as _test_time  # noqa: F401  (registers)

__all__ = ["Law", "Param", "get", "names", "register"]
