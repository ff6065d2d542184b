"""Progress over a run's work items (images x samples x steps x stages): a bar with rate and ETA, or log lines.

With ``progress=true`` a tqdm bar advances after every chunk of items, so stages explained together move it
steadily; with ``progress=false`` a log line says the fraction done at least every ``every_s`` seconds.
"""

from __future__ import annotations

import logging
import time
from typing import Optional

from tqdm.auto import tqdm

log = logging.getLogger(__name__)


class Progress:
    """Counts items passed through a model; ``total`` is known up front (``Engine.passes_per_image`` x images x
    stages)."""

    def __init__(self, total: int, show_bar: bool, desc: str = "items", every_s: float = 60.0) -> None:
        self.total, self.done, self.every_s = max(1, int(total)), 0, every_s
        self.start = self._last = time.monotonic()
        self.bar: Optional[tqdm] = tqdm(total=self.total, desc=desc, unit="item", smoothing=0.1) if show_bar else None

    def advance(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            rate = self.done / max(now - self.start, 1e-9)
            left = (self.total - self.done) / rate if rate > 0 else float("nan")
            log.info("maps: %.0f%% done (%d of %d items, %.0f items/s, about %.1f min left)",
                     100 * self.done / self.total, self.done, self.total, rate, left / 60)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
