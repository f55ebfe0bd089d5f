"""Figures, drawn with matplotlib's object API (no pyplot; every function returns its Axes or Figure).

- `scaling.plots.laws`: a fitted law against its data with its band (`plot_law`), residuals
  (`plot_residuals`), iso-loss contours in the (N, D) plane (`plot_isoloss`);
- `scaling.plots.compare`: recipe comparisons (`plot_comparison`), law selections
  (`plot_selection`), two-step task predictions (`plot_two_step`);
- `scaling.plots.isoflop`: the isoFLOP analysis (`plot_isoflop_curves`, `plot_training_envelope`,
  `plot_compute_optimal`, `plot_isoloss_frontier`).
"""

from scaling.plots.compare import plot_comparison, plot_selection, plot_two_step
from scaling.plots.laws import plot_isoloss, plot_law, plot_residuals

__all__ = ["plot_comparison", "plot_isoloss", "plot_law", "plot_residuals", "plot_selection", "plot_two_step"]
