"""docs/extending.md's recipes, each executed as written; the registries are left as they were."""

import re
from pathlib import Path

import numpy as np
import pytest

from benchmark.checks import TESTS
from benchmark.methods import METHODS
from benchmark.models import ARCHITECTURES
from benchmark.similarity import METRICS

ROOT = Path(__file__).resolve().parents[1]


def recipes() -> dict[str, str]:
    text = (ROOT / "docs" / "extending.md").read_text()
    out = {}
    for part in text.split("\n## Recipe: ")[1:]:
        title = part.splitlines()[0].strip()
        out[title] = re.search(r"```python\n(.*?)```", part, re.S).group(1)
    return out


RECIPES = recipes()


@pytest.fixture
def clean_registries():
    saved = [(r, dict(r)) for r in (TESTS, METHODS, ARCHITECTURES, METRICS)]
    yield
    for registry, before in saved:
        registry.clear()
        registry.update(before)


def test_there_are_four_recipes_each_short():
    assert set(RECIPES) == {"a method", "a model", "a test", "a metric"}
    for title, code in RECIPES.items():
        lines = [line for line in code.splitlines() if line.strip() and not line.lstrip().startswith(("#", "import",
                                                                                                     "from "))]
        assert len(lines) <= 20, (title, len(lines))


@pytest.mark.parametrize("title", sorted(RECIPES))
def test_recipe_runs_as_written(title, clean_registries, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(RECIPES[title], f"docs/extending.md ({title})", "exec"), namespace)
    if title == "a method":
        df = namespace["result"].scores
        assert set(df.method) == {"gradient", "abs_gradient"}
        # |gradient| ranks as the gradient's ABS map: the same ABS Spearman, value for value
        abs_rows = df[df.metric == "spearman_abs"]
        a = abs_rows[abs_rows.method == "gradient"]["value"].to_numpy()
        b = abs_rows[abs_rows.method == "abs_gradient"]["value"].to_numpy()
        assert (abs(a - b) < 1e-9).all()
    elif title == "a model":
        from benchmark.config import ExperimentConfig
        from benchmark.core import plan

        cfg = ExperimentConfig()
        cfg.model.name = "tiny_mlp"
        cfg.method = {"gradient": {}}
        p = plan(cfg)
        assert [s.layer for s in p.stages] == ["original", "logits", "hidden"]
    elif title == "a test":
        df = namespace["result"].scores
        assert sorted(df.stage.unique()) == [0, 1] and set(df.test) == {"logits_only"}
        assert df[df.stage == 1].layer.iloc[0] == "3"
    else:
        df = namespace["result"].scores
        assert set(df.metric) == {"spearman_abs", "cosine_abs"}
        assert np.allclose(df[(df.metric == "cosine_abs") & (df.stage == 0)]["value"], 1.0, atol=1e-6)


def plugin_module() -> str:
    """The four recipes' registrations as one module (each recipe cut before its example run)."""
    parts = []
    for code in RECIPES.values():
        lines = code.splitlines()
        cut = next((i for i, line in enumerate(lines) if line.startswith(("model = ", "result = "))), len(lines))
        parts.append("\n".join(lines[:cut]))
    return "\n\n".join(parts) + "\n"


def test_plugins_that_do_not_import_are_refused_with_the_key_and_the_fix(tmp_path, monkeypatch):
    from benchmark.registry import load_plugins

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"plugins=\['no_such_module'\]: module 'no_such_module' does not import"):
        load_plugins(["no_such_module"])
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('half-written')\n")
    with pytest.raises(ValueError, match="RuntimeError: half-written.*install it"):
        load_plugins(["broken_plugin"])
    with pytest.raises(ValueError, match="must be a list of module names"):
        load_plugins("my_suite")


def test_a_plugin_module_registers_a_test_for_sanity_check(tmp_path, monkeypatch, clean_registries):
    import sys

    import torch

    import benchmark

    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "my_suite_api", raising=False)
    (tmp_path / "my_suite_api.py").write_text(plugin_module())
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    try:
        result = benchmark.sanity_check(model, torch.rand(4, 1, 28, 28), test="logits_only",
                                        methods=["gradient", "abs_gradient"], plugins=["my_suite_api"])
    finally:
        sys.modules.pop("my_suite_api", None)
    assert set(result.scores.test) == {"logits_only"}
    assert set(result.scores.method) == {"gradient", "abs_gradient"}


@pytest.mark.e2e
def test_the_recipes_as_a_plugin_run_from_the_command_line(tmp_path):
    import subprocess
    import sys

    import pandas as pd

    (tmp_path / "my_suite.py").write_text(plugin_module())
    args = [sys.executable, "-m", "benchmark", "plugins=[my_suite]", "test=logits_only", "model=tiny_mlp",
            "method=[gradient,abs_gradient]", "similarity.metrics=[spearman_abs,cosine_abs]", "experiment=smoke",
            f"results_root={tmp_path / 'res'}", "progress=false"]
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (scores,) = (tmp_path / "res").rglob("scores.parquet")
    df = pd.read_parquet(scores)
    assert set(df.test) == {"logits_only"}
    assert set(df.method) == {"gradient", "abs_gradient"} and set(df.metric) == {"spearman_abs", "cosine_abs"}
    assert sorted(df.stage.unique()) == [0, 1]
    assert np.allclose(df[(df.metric == "cosine_abs") & (df.stage == 0)]["value"], 1.0, atol=1e-6)


def _installed_package(root: Path, module: str, source: str) -> None:
    """A package installed under ``root`` as pip leaves one: its module and a dist-info folder with its entry point."""
    (root / f"{module}.py").write_text(source)
    info = root / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[saliency_sanity_checks.plugins]\nsuite = {module}\n")


def test_installed_packages_register_through_their_entry_point(tmp_path, monkeypatch, clean_registries):
    import sys

    from benchmark import registry

    metric = RECIPES["a metric"].split("\nmodel = ")[0]
    _installed_package(tmp_path, "installed_metric_suite", metric)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_installed_loaded", False)
    monkeypatch.delitem(sys.modules, "installed_metric_suite", raising=False)
    assert "cosine_abs" not in METRICS
    registry.load_plugins([])
    assert "cosine_abs" in METRICS
    sys.modules.pop("installed_metric_suite", None)


def test_an_installed_plugin_that_does_not_import_names_its_package(tmp_path, monkeypatch):
    from benchmark import registry

    _installed_package(tmp_path, "broken_installed_suite", "raise ImportError('missing dependency')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_installed_loaded", False)
    with pytest.raises(ValueError, match=r"installed plugin suite = 'broken_installed_suite'.*package "
                                         r"'broken_installed_suite'.*missing dependency.*fix or uninstall"):
        registry.load_plugins([])
    assert registry._installed_loaded is False  # the next run asks again
