"""What a test's per-run report says about it: the hook a ``Check`` may define, ``report_text(meta)``.

A test that defines it describes itself in its report (what it compares, its stage axis, its maps' columns);
the paper's tests define none, and their reports keep the text written for them in ``benchmark.report``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class ReportText:
    description: str  # the report's "test" fact, e.g. "random logit (Sixt et al. 2020)"
    axis: str  # the x-axis of the per-stage figures (the stages in order)
    columns: str  # what the columns of the grids of maps are
    compares: str  # one paragraph: what the test compares, and how to read its scores
    # The caption of the per-stage figure after the metric's name; None: the report's default.
    curves: Optional[str] = None
    # Whether the cascading comparison with Adebayo et al. 2018 applies (the paper's own model tests).
    paper: bool = False
    # The test's own verdict rule and how to read it, in place of the suite's rule and reading (a test whose pass
    # means the maps stayed the same: input invariance); None: the suite's. A test with its own rule defines
    # ``judge(verdicts, meta)``, which the report applies to the rule's verdicts.
    verdict_rule: Optional[str] = None
