"""Benchmarks: timing goals and statistical checks, run as ``python -m benchmarks.NAME``.

Each script prints its table; the numbers quoted in ``benchmarks/README.md`` come from such runs.
"""

# With libtpu installed (the test extra) but no TPU here, keep jax on the CPU/GPU quietly.
from scaling.fitting.solver import skip_absent_tpu

skip_absent_tpu()
