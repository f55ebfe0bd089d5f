"""The study runner: every experiment file declares runs, measurements and an analysis, and
`run_study` trains, measures and analyzes them, resumably (see `experiments.runner.study`).

- `recipe`: the shared run recipe (`Recipe`: shape, batch and learning-rate rules, steps, seeds,
  base config, presets, the command line) that every study declaration subclasses
- `design`: study-design maths (sizes around a prior's optimum, steps for a budget)
- `runs`: the train stage (run ids, results.csv, training curves)
- `measure`: per-run measure stages (``<name>.csv``, resumable item by item)
- `study`: `run_study`, the exit status (`StudyFailed`), logging
"""
