"""What a test's per-run report says about it: ``Check.report_text(meta)`` returns one ``ReportText``.

Every test describes itself in its report (what it compares, its stage axis, its maps' columns, the layout of its
summary figure, which of the paper's findings sit beside it); ``Check`` gives a plain default, the paper's tests and
those after it their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

FIGURES = ("curves", "bars")
PAPER_FINDINGS = ("cascading", "data_randomization")


@dataclass(frozen=True)
class ReportText:
    description: str  # the report's "test" fact, e.g. "random logit (Sixt et al. 2020)"
    axis: str  # the x-axis of the per-stage figures (the stages in order)
    columns: str  # what the columns of the grids of maps are
    compares: str  # one paragraph: what the test compares, and how to read its scores
    # The caption of the summary figure (after the metric's name for curves); None: the report's default.
    caption: Optional[str] = None
    # The summary figure: "curves" (per metric, each stage's similarity to the reference) or "bars" (per method and
    # metric, the one comparison of a two-stage test: data randomization's true- against random-label model).
    figure: str = "curves"
    # Which finding of Adebayo et al. 2018 the report sets beside the run's: "cascading" (the Inception v3 cascade,
    # judged by eye), "data_randomization" (the MNIST bar charts' ABS Spearman), None: none.
    paper: Optional[str] = None
    # The test's own verdict rule and how to read it, in place of the suite's rule and reading (a test whose pass
    # means the maps stayed the same: input invariance); None: the suite's. A test with its own rule defines
    # ``judge(verdicts, meta)``, which the report applies to the rule's verdicts.
    verdict_rule: Optional[str] = None

    def __post_init__(self) -> None:
        if self.figure not in FIGURES:
            raise ValueError(f"ReportText(figure={self.figure!r}) is not a summary figure; use one of {FIGURES}")
        if self.paper is not None and self.paper not in PAPER_FINDINGS:
            raise ValueError(f"ReportText(paper={self.paper!r}) is not a finding of the paper the reports know; use "
                             f"one of {PAPER_FINDINGS} or None")
