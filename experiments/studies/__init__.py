"""The study files: each declares one study on the shared recipe (`experiments.runner.recipe`)
and its report (`experiments.reports`), and runs as ``python -m experiments.studies.<name>``.

- `isoflop_chinchilla`: Hoffmann et al.'s isoFLOP grid (also ``python -m experiments.isoflop_chinchilla``)
- `isoflop_nonembed`: the same grid under the non-embedding FLOP convention
- `quantization_degradation`: PTQ and QAT laws of the project's own runs
- `inference_compute`: pass@k laws from sampling the project's models (test-time compute)

A new study is a new file here: the import-linter layer (`.importlinter`) and the tests' smoke
fixtures (its ``SMOKE`` constant, tests/conftest.py) pick it up; see docs/writing_a_study.md.
"""
