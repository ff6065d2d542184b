"""Nothing lost, nothing left behind: overwrite beside the old run, umask-honouring files, cleanup after a kill,
a diverged training cached nowhere."""

import os
import stat
import pytest
import torch

from benchmark import store
from benchmark.model_randomization import run
from tests.conftest import smoke_cfg

FAST = ("method=[gradient]", "similarity.metrics=[spearman_abs]")


@pytest.mark.e2e
def test_an_interrupted_overwrite_leaves_the_previous_result_valid(tmp_path, monkeypatch):
    run_dir = run(smoke_cfg(tmp_path / "r", *FAST))
    before = store.file_sha256(run_dir / "scores.parquet")

    def interrupted(*a, **k):
        raise KeyboardInterrupt("interrupted while the new run computes")

    monkeypatch.setattr("benchmark.core.score_stages", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(smoke_cfg(tmp_path / "r", *FAST, "overwrite=true"))
    assert store.is_finished(run_dir) and store.file_sha256(run_dir / "scores.parquet") == before
    monkeypatch.undo()
    again = run(smoke_cfg(tmp_path / "r", *FAST, "overwrite=true", "seed=0"))  # the overwrite done: replaced whole
    assert again == run_dir and store.is_finished(run_dir)
    assert not store.staging_dir(run_dir).exists()
    assert [p.name for p in run_dir.parent.iterdir() if p.name.startswith(".")] == []


@pytest.mark.e2e
def test_a_kill_between_the_two_renames_of_an_overwrite_is_recovered(tmp_path):
    run_dir = run(smoke_cfg(tmp_path / "r", *FAST))
    aside = run_dir.parent / f".{run_dir.name}.replaced"
    os.rename(run_dir, aside)  # where replace_run's first rename leaves it
    run_dir.mkdir()
    (run_dir / store.RUN_LOCK).touch()
    assert run(smoke_cfg(tmp_path / "r", *FAST)) == run_dir  # restored and found finished, not recomputed
    assert store.is_finished(run_dir) and not aside.exists()


@pytest.mark.e2e
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664)])
def test_files_honour_the_umask_and_a_group_member_can_read_them(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        run_dir = run(smoke_cfg(tmp_path / "shared", *FAST))
    finally:
        os.umask(old)
    files = [p for p in run_dir.rglob("*") if p.is_file() and p.name != store.RUN_LOCK]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == mode for p in files), \
        {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    if os.geteuid() == 0 and umask == 0o002:  # as an unprivileged member of the files' group
        for d in [tmp_path, *tmp_path.parents][:-1]:
            d.chmod(d.stat().st_mode | 0o011)  # pytest's own folders are private to their owner
        gid = (run_dir / "scores.parquet").stat().st_gid
        pid = os.fork()
        if pid == 0:  # the child drops to nobody in the files' group and reads every file
            try:
                os.setgroups([gid])
                os.setgid(gid)
                os.setuid(65534)
                for p in files:
                    p.read_bytes()
                os._exit(0)
            except BaseException:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.e2e
def test_left_over_temporaries_are_removed_when_the_run_is_redone(tmp_path):
    run_dir = run(smoke_cfg(tmp_path / "r", *FAST))
    (run_dir / "status.json").write_text('{"state": "running", "pid": 1}')  # as a kill -9 leaves it
    spill = run_dir / ".maps_spill_abc"
    spill.mkdir()
    (spill / "gradient__abs.f16").write_bytes(b"\0" * 16)
    half = run_dir / ".scores.parquet.x1.tmp"
    half.write_bytes(b"half")
    ckpts = tmp_path / "cache" / "checkpoints"
    (stale,) = [ckpts / f".{p.stem}.pt.x2.tmp" for p in ckpts.glob("*.pt")]
    stale.write_bytes(b"half a checkpoint")
    run(smoke_cfg(tmp_path / "r", *FAST))
    assert store.is_finished(run_dir)
    assert not spill.exists() and not half.exists() and not stale.exists()


def test_a_diverged_training_stops_and_caches_nothing(tmp_path, monkeypatch):
    import torch.nn.functional as F

    calls = []

    def diverging(logits, y):
        calls.append(1)
        loss = F.cross_entropy(logits, y)
        return loss * float("nan") if len(calls) >= 3 else loss

    monkeypatch.setattr("benchmark.training.F", type("F", (), {"cross_entropy": staticmethod(diverging)}))
    with pytest.raises(ValueError, match="training diverged in epoch 1: the loss became nan; lower training.lr"):
        run(smoke_cfg(tmp_path / "r", *FAST))
    assert not list((tmp_path / "cache").rglob("*.pt"))


@pytest.mark.e2e
def test_a_cached_checkpoint_with_non_finite_weights_is_retrained(tmp_path, caplog):
    run(smoke_cfg(tmp_path / "r", *FAST))
    (ckpt,) = (tmp_path / "cache" / "checkpoints").glob("*.pt")
    state = torch.load(ckpt, weights_only=True)
    state["logits.bias"][0] = float("nan")
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    ckpt.write_bytes(buf.getvalue())
    ckpt.with_suffix(".sha256").write_text(__import__("hashlib").sha256(buf.getvalue()).hexdigest() + "\n")
    with caplog.at_level("WARNING", logger="benchmark.training"):
        run(smoke_cfg(tmp_path / "r", *FAST, "overwrite=true"))
    assert "non-finite weights" in caplog.text
    assert bool(torch.isfinite(torch.load(ckpt, weights_only=True)["logits.bias"]).all())
