"""The runners' shared edge, now ``benchmark.cli`` (kept so that ``import common`` in the runners still works)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.cli import (OUTCOME, SweepSummary, apply_command_line, launcher_threads, log, main_for,  # noqa: E402,F401
                           read_outcomes, to_experiment)
