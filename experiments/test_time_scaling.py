"""Deprecated: the test-time compute study is `experiments.studies.inference_compute`
(``python -m experiments.studies.inference_compute ...``). This command and import path still work,
with a DeprecationWarning; importing this module returns that module."""

import sys
import warnings

from experiments.studies import inference_compute as _study

# as a command this module is __main__ (stacklevel 1: shown by default); imported, the importer is named
warnings.warn("experiments.test_time_scaling is deprecated: use experiments.studies.inference_compute "
              "(python -m experiments.studies.inference_compute)", DeprecationWarning,
              stacklevel=1 if __name__ == "__main__" else 2)

if __name__ == "__main__":
    from experiments.harness import cli

    cli.run(_study.main)
else:
    sys.modules[__name__] = _study
