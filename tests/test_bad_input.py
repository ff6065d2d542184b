"""The bad-input catalogue of docs/bad_input.md, replayed row by row; non-finite model output recorded, not a crash."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

import common
from benchmark import inputs, model_randomization, training
from benchmark.models import get_architecture
from benchmark.postprocess import PROCESSORS
from benchmark.similarity import METRICS

ROOT = Path(__file__).resolve().parents[1]


def catalogue() -> list[tuple[str, str]]:
    """(input, message) rows of the first table under the 'Bad input' heading of docs/bad_input.md."""
    text = (ROOT / "docs" / "bad_input.md").read_text()
    section = text[text.index("# Bad input"):]
    table = section[section.index("| input |"):].split("\n\n", 1)[0].splitlines()[2:]
    rows = []
    for line in table:
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        given = re.match(r"`([^`]*)`", cells[0]).group(1)
        message = re.match(r"`([^`]*)`", cells[1]).group(1)
        rows.append((given, message))
    return rows


ROWS = catalogue()


CLAIM = ("all but `n_images`, the data files, the weights\nfile and a segmentation of one region (found on the first "
         "image) before any data is loaded")
# Rows the claim covers whose check runs on the loaded data today: the claim is wrong for them (listed, so a
# row that starts to load data fails, and a listed row that stops loading it fails too).
LOADS_DATA_DESPITE_THE_CLAIM: dict[str, str] = {}


def refused_before_data(given: str, message: str) -> bool:
    """What the catalogue's first paragraph claims for a row: refused before any data is loaded, unless it is
    `n_images` against the split's size, about the data files (``data.root``), the weights file (a path in
    ``model.weights``) or the segmentation of the first image."""
    if "held-out split" in message or "data.root" in message or "on the first image" in message:
        return False
    return not re.search(r"model\.weights=[</]", given)


def test_the_catalogue_says_which_rows_are_refused_before_any_data_is_loaded():
    first = (ROOT / "docs" / "bad_input.md").read_text().split("# Bad input", 1)[1].split("\n\n")[2]
    assert CLAIM in first, first
    exempt = [given for given, message in ROWS if not refused_before_data(given, message)]
    assert 4 <= len(exempt) <= 16, exempt
    assert set(LOADS_DATA_DESPITE_THE_CLAIM) <= {given for given, _ in ROWS}


def test_the_catalogue_is_long_and_each_input_is_one_row():
    assert len(ROWS) >= 40 and len({r[0] for r in ROWS}) == len(ROWS)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    base = tmp_path_factory.mktemp("paths")
    file = base / "a_file"
    file.write_text("not a folder")
    (base / "empty").mkdir()
    mlp = get_architecture("mlp").build(1, 10)
    torch.save(mlp.state_dict(), base / "mlp.pt")
    good = base / "cnn.pt"
    torch.save(get_architecture("cnn").build(1, 10).state_dict(), good)
    (base / "corrupted.pt").write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    return {"<file>": str(file), "<empty folder>": str(base / "empty"), "<corrupted .pt>": str(base / "corrupted.pt"),
            "<mlp weights>": str(base / "mlp.pt")}


def fill(text: str, paths: dict[str, str]) -> str:
    for key, value in paths.items():
        text = text.replace(key, value)
    return text


@pytest.mark.parametrize("given,message", ROWS, ids=[r[0] for r in ROWS])
def test_catalogue_row(given, message, paths, tmp_path, monkeypatch):
    if given == "device=cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    if given.startswith("results_root=/proc") and not Path("/proc").is_dir():
        pytest.skip("no /proc here")

    def no_training(*a, **k):
        raise AssertionError("training started before the input was checked")

    monkeypatch.setattr(training, "fit", no_training)
    loads = []
    load_dataset = inputs.load_dataset

    def recorded_load(*a, **k):
        loads.append(a)
        return load_dataset(*a, **k)

    monkeypatch.setattr(inputs, "load_dataset", recorded_load)
    overrides = fill(given, paths).split()
    if not any(o.startswith(("results_root=", "cache_dir=")) for o in overrides):
        overrides.append(f"results_root={tmp_path / 'results'}")
    with pytest.raises(Exception) as info:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose(config_name="model_randomization",
                          overrides=["experiment=smoke", "progress=false", *overrides])
        exp = common.apply_command_line(common.to_experiment(cfg), [o.split("=")[0].lstrip("+") for o in overrides])
        model_randomization.run(exp)
    err = info.value
    said = f"{err}\n{err.__cause__ or ''}"
    assert not isinstance(err, AssertionError), said
    position = 0
    for fragment in fill(message, paths).split(" ... "):
        found = said.find(fragment, position)
        assert found >= 0, f"{fragment!r} not in the message:\n{said}"
        position = found + len(fragment)
    for status in tmp_path.glob("**/status.json"):
        assert json.loads(status.read_text())["state"] != "done"
    if refused_before_data(given, message):
        if given in LOADS_DATA_DESPITE_THE_CLAIM:
            assert loads, f"{given!r} no longer loads data: remove it from LOADS_DATA_DESPITE_THE_CLAIM"
            pytest.xfail(f"docs/bad_input.md claims no data is loaded, but {LOADS_DATA_DESPITE_THE_CLAIM[given]}")
        assert not loads, "data loaded before the input was refused"


def test_unwritable_results_folder_fails_before_data_or_training(tmp_path, monkeypatch):
    """As root the permission bits do not stop a write; a file in the way does, for everyone."""
    blocker = tmp_path / "results"
    blocker.write_text("")

    def no_data(*a, **k):
        raise AssertionError("data loaded before the results folder was checked")

    monkeypatch.setattr("benchmark.inputs.load_dataset", no_data)
    from test_run import smoke_cfg

    with pytest.raises(ValueError, match="results_root=.* cannot be written"):
        model_randomization.run(smoke_cfg(blocker, "method=[gradient]"))


def test_non_finite_maps_become_nan_with_a_reason():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(3, 1, 28, 28))
    maps[1, 0, 3, 4] = np.inf  # one pixel is enough: the finite rest is not scored as if nothing happened
    maps[2, 0, 0, 0] = np.nan
    for name, fn in PROCESSORS.items():
        out = fn(maps) if name == "minmax" else fn(maps, 99.0)
        assert np.isfinite(out[0]).all() and np.isnan(out[1]).all() and np.isnan(out[2]).all(), name
    processed = {k: (fn(maps) if k == "minmax" else fn(maps, 99.0)) for k, fn in PROCESSORS.items()}
    reference = {k: np.repeat(v[:1], 3, axis=0) for k, v in processed.items()}
    from benchmark.config import SimilarityConfig

    for metric in METRICS.values():
        sc = metric.score(reference[metric.input], processed[metric.input], SimilarityConfig())
        assert np.isfinite(sc.value[0]) and np.isnan(sc.value[1:]).all(), metric.name
        assert sc.nan_reason == [None, "non_finite_map", "non_finite_map"], metric.name


@pytest.mark.e2e
def test_overflowing_randomized_model_is_recorded_per_stage_not_a_crash(tmp_path, caplog):
    from test_run import smoke_cfg

    cfg = smoke_cfg(tmp_path, "method=[gradient,edge]", "randomization.std=1e20", "model=mlp")
    run_dir = model_randomization.run(cfg)
    from benchmark import store

    assert store.is_finished(run_dir)
    df = pd.read_parquet(run_dir / "scores.parquet")
    meta = json.loads((run_dir / "meta.json").read_text())
    broken = [s for s in meta["stages"] if not s["output_finite"]]
    assert broken and meta["stages"][0]["output_finite"] and meta["stages"][0]["non_finite_maps"] == {}
    for s in broken:
        assert s["non_finite_maps"].get("gradient") == cfg.n_images and "edge" not in s["non_finite_maps"]
        rows = df[(df.stage == s["stage"]) & (df.method == "gradient")]
        assert rows.value.isna().all() and (rows.nan_reason == "non_finite_map").all()
    assert (df[df.method == "edge"].value == 1.0).all()  # the control ignores the model
    assert "images with non-finite maps" in caplog.text


def test_results_of_a_sweep_do_not_depend_on_the_global_random_state(tiny_cnn, digits_batch):
    """Every draw comes from a generator derived from (seed, purpose): reseeding the global RNGs changes nothing."""
    import random

    from benchmark.config import DataConfig, RandomizationConfig, Reinit
    from benchmark.data import load_dataset
    from benchmark.engine import Engine
    from benchmark.methods import build_methods
    from benchmark.randomization import randomized, stages
    from benchmark.training import build_model

    arch = get_architecture("cnn")
    data = load_dataset(DataConfig())
    x, _ = digits_batch
    outputs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        np.random.seed(global_seed)
        random.seed(global_seed)
        model = build_model(arch, data, seed=0).eval()
        stage = stages(arch, "cascading")[2]
        with randomized(model, arch, stage, RandomizationConfig(reinit=Reinit.truncated_normal), seed=0) as m:
            methods = build_methods({"smoothgrad": {"n_samples": 3}, "noise": {}})
            maps = Engine(m, methods, seed=0).explain(x, torch.zeros(len(x), dtype=torch.long),
                                                      torch.arange(len(x)), stage_key="s")
        outputs.append({k: v.clone() for k, v in {**maps, **dict(model.state_dict())}.items()})
    assert outputs[0].keys() == outputs[1].keys()
    for k in outputs[0]:
        assert torch.equal(outputs[0][k], outputs[1][k]), k


def test_tempfile_probe_leaves_nothing_behind(tmp_path):
    from benchmark import store

    store.check_writable(tmp_path / "a" / "b", "results_root", tmp_path)
    assert list((tmp_path / "a" / "b").iterdir()) == []
