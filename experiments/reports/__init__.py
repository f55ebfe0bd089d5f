"""Analyze stages of the studies: fit laws with `scaling`, write fits/, plots/ and report.md.

- `isoflop`: Hoffmann et al.'s three approaches on an isoFLOP grid
"""
