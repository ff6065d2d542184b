"""Inputs outside the catalogue that used to give finished-looking results: damaged run folders, odd names."""

import json

import pytest
import torch

import benchmark
from benchmark import store
from benchmark.collect import collect


def _finished_run(tmp_path):
    from tests.test_open_suite import UserNet, images

    result = benchmark.sanity_check(UserNet(), images(2), methods=["gradient"], progress=False, quiet=True)
    return result.write(tmp_path / "run")


@pytest.mark.parametrize("content", [b"[]", b"\xff\xfe not utf-8", b'"done"', b'{"state": "done"}',
                                     b'{"state": "done", "files": {"scores.parquet": 5}}', b"{not json"])
def test_a_damaged_status_is_not_finished_and_is_named(tmp_path, content, caplog):
    run_dir = _finished_run(tmp_path)
    assert store.is_finished(run_dir)
    (run_dir / "status.json").write_bytes(content)
    with caplog.at_level("WARNING", logger="benchmark.store"):
        assert not store.is_finished(run_dir)
    col = collect(tmp_path)
    assert not col.runs and len(col.skipped) == 1 and col.skipped[0].run_dir == run_dir


def test_a_status_without_the_hash_of_a_run_file_is_not_finished(tmp_path):
    run_dir = _finished_run(tmp_path)
    status = json.loads((run_dir / "status.json").read_text())
    del status["files"]["scores.parquet"]
    (run_dir / "status.json").write_text(json.dumps(status))
    assert store.is_finished(run_dir)  # what it lists is intact
    assert not store.is_finished(run_dir, ["scores.parquet"])  # but a run needs its scores hashed


@pytest.mark.parametrize("name", ["../evil", "/abs/path", "a/b", ".hidden", ".."])
def test_names_that_would_leave_the_results_folder_are_refused(name):
    from tests.test_open_suite import UserNet, images

    with pytest.raises(ValueError, match="must be a plain name"):
        benchmark.sanity_check(UserNet(), images(2), methods=["gradient"], model_name=name, quiet=True)
    with pytest.raises(ValueError, match="must be a plain name"):
        benchmark.sanity_check(UserNet(), images(2), methods=["gradient"], data_name=name, quiet=True)


@pytest.mark.parametrize("settings,match", [
    ({"method_settings": {}, "seed": 2**64}, "does not fit 64 bits"),
    ({"randomization": {"std": float("nan")}}, "randomization.std=nan is not a finite number"),
    ({"similarity": {"percentile": float("inf")}}, "similarity.percentile=inf is not a finite number"),
    ({"verdict.threshold": float("nan")}, "verdict.threshold=nan is not a finite number"),
])
def test_non_finite_and_huge_numbers_are_refused_before_compute(settings, match):
    from tests.test_open_suite import UserNet, images

    with pytest.raises(ValueError, match=match):
        benchmark.sanity_check(UserNet(), images(2), methods=["gradient"], quiet=True, **settings)


def test_a_non_finite_method_setting_is_refused():
    from benchmark.methods import build_method

    for value in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="noise_level"):
            build_method("smoothgrad", {"noise_level": value})
    assert torch.isfinite(torch.tensor(build_method("smoothgrad").noise_level))


def test_a_changed_weights_file_is_a_different_run(tmp_path):
    from benchmark.config import ExperimentConfig
    from benchmark.core import plan
    from benchmark.models import get_architecture

    path = tmp_path / "cnn.pt"

    def run_id():
        cfg = ExperimentConfig()
        cfg.model.weights, cfg.method, cfg.results_root = str(path), {"gradient": {}}, str(tmp_path / "r")
        return plan(cfg)

    torch.manual_seed(0)
    torch.save(get_architecture("cnn").build(1, 10).state_dict(), path)
    first = run_id()
    assert run_id().run_id == first.run_id  # same content, same run
    torch.manual_seed(1)
    torch.save(get_architecture("cnn").build(1, 10).state_dict(), path)  # same path, new content
    second = run_id()
    assert second.run_id != first.run_id
    assert first.inputs["model.weights"] != second.inputs["model.weights"]


def test_a_changed_image_is_a_different_run(tmp_path):
    import numpy as np
    from PIL import Image

    from benchmark.resolve import input_digests

    from benchmark.config import ExperimentConfig

    root = tmp_path / "photos"
    root.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "a.png")
    cfg = ExperimentConfig()
    cfg.data.name, cfg.data.root = "image_folder", str(root)
    before = input_digests(cfg)["data.root"]
    Image.fromarray(np.ones((8, 8, 3), np.uint8)).save(root / "a.png")
    assert input_digests(cfg)["data.root"] != before
