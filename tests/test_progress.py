"""Progress a user can follow: the count of work items reaches its total, advances within stages explained
together, and without a bar a log line says the fraction done."""

import pytest

from benchmark.model_randomization import run
from benchmark.progress import Progress
from tests.conftest import smoke_cfg


class Recorder(Progress):
    made: list = []

    def __init__(self, total, show_bar, desc="items", every_s=60.0):
        super().__init__(total, show_bar, desc, every_s=0.0)  # a log line at every chunk
        self.steps = []
        Recorder.made.append(self)

    def advance(self, n):
        self.steps.append(n)
        super().advance(n)


@pytest.mark.e2e
@pytest.mark.parametrize("together", [True, False])
def test_items_reach_their_total_chunk_by_chunk(tmp_path, monkeypatch, caplog, together):
    from benchmark import schedule

    Recorder.made = []
    monkeypatch.setattr("benchmark.schedule.Progress", Recorder)
    engine_for = schedule.engine_for

    def small_chunks(*a, **k):
        engine = engine_for(*a, **k)
        engine.max_chunk = 8
        return engine

    monkeypatch.setattr(schedule, "engine_for", small_chunks)
    with caplog.at_level("INFO", logger="benchmark.progress"):
        run(smoke_cfg(tmp_path / "r", "method=[gradient,smoothgrad]",
                      f"share_unchanged_layers={str(together).lower()}"))
    (p,) = Recorder.made
    assert p.done == p.total and p.total == 7 * 4 * 5  # (1 + the smoke config's 6 samples) x 4 images x 5 stages
    # stages together advance the count chunk by chunk (28 items of 8-item chunks), not once at the end
    assert len(p.steps) >= (4 if together else 20)
    assert "maps: 100% done" in caplog.text
