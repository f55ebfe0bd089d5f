"""Deprecated module path: the pass@k and coverage laws live in `scaling.laws.pass_at_k`.

``import scaling.laws.test_time`` (and ``scaling.test_time``) still work, with a
`DeprecationWarning`, and give the very module `scaling.laws.pass_at_k` (one registry, one set of
functions): the name read like a test file to pytest and coverage tools.
"""

import sys
import warnings

from scaling.laws import pass_at_k as _pass_at_k

warnings.warn("scaling.laws.test_time is deprecated; import scaling.laws.pass_at_k instead",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _pass_at_k
