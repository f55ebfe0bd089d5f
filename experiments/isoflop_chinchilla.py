"""`python -m experiments.isoflop_chinchilla`: the study declared in `experiments.studies.isoflop_chinchilla` (this
module is that module: importing it returns it, so attributes and monkeypatches are shared)."""

import sys

from experiments.studies import isoflop_chinchilla as _study

if __name__ == "__main__":
    from experiments.harness import cli

    cli.run(_study.main)
else:
    sys.modules[__name__] = _study
