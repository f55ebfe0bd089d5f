"""When a run has diverged: :class:`DivergenceMonitor`, step by step, with a JSON state.

A NaN/inf training loss ends the run at once with
status "diverged"; otherwise the run diverges when the smoothed loss, the median of the last
``train.divergence_window`` step losses (the lower median for an even count), exceeds
``train.divergence_ratio`` x the lowest smoothed loss so far. The median ignores spikes that
are a minority of the window, so a noisy but healthy run goes on, while a loss that stays high
is caught after floor(window / 2) + 1 steps (4 of the default 7). The train loop
(``experiments.harness.train``) writes the record of the step where it fired.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping, Sequence
from typing import Any


class DivergenceMonitor:
    """Decides, step by step, whether the training loss has diverged.

    ``update(step, loss)`` returns None while the run is healthy, else the reason:
      - the loss is NaN or inf, or
      - the smoothed loss m_t, the lower median of the last ``window`` losses (of all losses
        while fewer were seen), exceeds ``ratio`` x min_{s <= t} m_s.
    The lower median of n values is the ceil(n/2)-th smallest, so it rises above a level only
    when a majority of the window (floor(n/2) + 1 losses) lies above it: isolated spikes, and
    the low outliers that make the lowest single-step loss a poor reference, do not trigger it.
    ``state()`` is JSON (the recent losses and the best smoothed value); ``from_state``
    restores it, so a resumed run decides exactly as an uninterrupted one.
    """

    def __init__(self, ratio: float, window: int, recent: Sequence[float] = (),
                 best: float = math.inf):
        if not ratio > 1:
            raise ValueError(f"divergence ratio must be > 1, got {ratio}")
        if window < 1:
            raise ValueError(f"divergence window must be >= 1, got {window}")
        self.ratio, self.window = float(ratio), int(window)
        self.recent = collections.deque((float(x) for x in recent), maxlen=self.window)
        self.best = float(best)

    @property
    def smoothed(self) -> float:
        """The lower median of the recent losses (inf when none was seen)."""
        if not self.recent:
            return math.inf
        ordered = sorted(self.recent)
        return ordered[(len(ordered) - 1) // 2]

    def update(self, step: int, loss: float) -> str | None:
        loss = float(loss)
        if not math.isfinite(loss):
            return f"train loss {loss} is not finite at step {step}"
        self.recent.append(loss)
        smoothed = self.smoothed
        if smoothed > self.ratio * self.best:
            return (f"smoothed train loss {smoothed:.4g} (median of the last {len(self.recent)} "
                    f"steps) exceeds {self.ratio:g} x the lowest smoothed loss so far "
                    f"({self.best:.4g}) at step {step}")
        self.best = min(self.best, smoothed)
        return None

    def state(self) -> dict:
        return {"recent": list(self.recent),
                "best": self.best if math.isfinite(self.best) else None}

    @classmethod
    def from_state(cls, ratio: float, window: int, state: Mapping[str, Any]) -> DivergenceMonitor:
        if not isinstance(state, Mapping) or "recent" not in state:
            raise ValueError(f"not a divergence-monitor state: {str(state)[:200]}")
        best = state.get("best")
        return cls(ratio, window, state["recent"], math.inf if best is None else best)
