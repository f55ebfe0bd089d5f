"""Deprecated alias of `experiments.reports.pass_at_k` (importing this module returns that module)."""

import sys
import warnings

from experiments.reports import pass_at_k as _module

warnings.warn("experiments.reports.test_time is deprecated: use experiments.reports.pass_at_k",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _module
