"""`python -m experiments.quantization_degradation`: the study declared in `experiments.studies.quantization_degradation` (this
module is that module: importing it returns it, so attributes and monkeypatches are shared)."""

import sys

from experiments.studies import quantization_degradation as _study

if __name__ == "__main__":
    from experiments.harness import cli

    cli.run(_study.main)
else:
    sys.modules[__name__] = _study
