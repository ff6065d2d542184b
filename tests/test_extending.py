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
