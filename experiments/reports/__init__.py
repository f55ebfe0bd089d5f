"""Analyze stages of the studies: fit laws with `scaling`, write fits/, plots/ and report.md.

- `isoflop`: Hoffmann et al.'s three approaches on an isoFLOP grid
- `quantization`: PTQ degradation laws, the turning point, the WSD control
- `pass_at_k`: pass@k laws per model and across models, the compute frontier (+ `pass_at_k_plots`)
  (`test_time` and `test_time_plots` are deprecated aliases)
- `files`: the fitted-law and figure writers they share
"""
