"""What a study's measure stages measure on a trained run (`experiments.runner.measure.Measure`):

- `ptq`: post-training quantization of a checkpoint in each format, paired held-out loss deltas
- `samples`: n samples per held-out problem of a verifiable task, exact and weak pass counts
"""
