"""Every YAML composes, every registry key has its file, and overrides reach the library."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

import common  # noqa: F401  (registers the schema)
from benchmark.config import Order, Profile, Reinit, resolve_profile
from benchmark.data import LOADERS, PHOTO_LOADERS
from benchmark.methods import METHODS
from benchmark.methods.settings import method_nodes
from benchmark.models import ARCHITECTURES, EXTERNAL

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def make(overrides=(), name="model_randomization"):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=name, overrides=list(overrides))
        return common.to_experiment(cfg) if name != "report" else OmegaConf.to_object(cfg)


def test_default_composes_with_every_method():
    cfg = make()
    assert list(cfg.method) == ["gradient", "gradient_x_input", "integrated_gradients", "smoothgrad", "vargrad",
                                "ig_smoothgrad", "guided_backprop", "gradcam", "guided_gradcam", "edge", "noise"]
    from benchmark.model_randomization import plan

    plan(cfg)  # settings resolved: the paper's defaults
    assert cfg.method["smoothgrad"] == {"n_samples": 50, "noise_level": 0.15}
    assert cfg.method["ig_smoothgrad"]["n_steps"] == 50 and cfg.method["integrated_gradients"]["n_steps"] == 50
    assert cfg.n_images >= 32 and cfg.randomization.order == Order.cascading and cfg.profile == Profile.paper


@pytest.mark.parametrize("group", ["model", "data", "method", "randomization", "similarity", "experiment",
                                   "training", "verdict"])
def test_every_option_of_every_group_composes(group):
    if group == "method":  # typed nodes made from the dataclasses (benchmark.methods.settings), no YAML files
        assert not (CONF / group).exists()
        for name in method_nodes():
            make([f"method=[{name}]"])
        return
    for f in sorted((CONF / group).glob("*.yaml")):
        make([f"{group}={f.stem}"])


def test_registry_keys_have_options_and_module_files():
    from benchmark.data import TEXT_DATA
    from benchmark.methods import TEXT_METHODS

    for key, cls in {**TEXT_METHODS, **METHODS}.items():
        # its own module, or the module of its family (perturbation.py: occlusion, leave_one_out, lime)
        assert cls.__module__.startswith("benchmark.methods."), key
        assert (ROOT / "benchmark" / "methods" / f"{cls.__module__.rsplit('.', 1)[1]}.py").exists(), key
    assert set(method_nodes()) == set(METHODS) | set(TEXT_METHODS)
    assert {f.stem for f in (CONF / "model").glob("*.yaml")} == set(ARCHITECTURES) | set(EXTERNAL)
    assert {f.stem for f in (CONF / "data").glob("*.yaml")} == set(LOADERS) | set(PHOTO_LOADERS) | set(TEXT_DATA)


def test_overrides_reach_the_typed_config():
    cfg = make(["randomization=independent", "method=[gradient,smoothgrad]", "n_images=16", "seed=1",
                "profile=code", "method.smoothgrad.n_samples=10"])
    assert cfg.randomization.order == Order.independent and list(cfg.method) == ["gradient", "smoothgrad"]
    assert cfg.method["smoothgrad"]["n_samples"] == 10 and cfg.n_images == 16 and cfg.seed == 1
    smoke = make(["experiment=smoke", "method=[gradient,smoothgrad]", "method_settings.smoothgrad.n_samples=9"])
    from benchmark.model_randomization import plan

    plan(smoke)  # experiment settings apply to the selected methods only
    assert smoke.method == {"gradient": {}, "smoothgrad": {"n_samples": 9, "noise_level": 0.15}}
    resolve_profile(cfg)
    assert cfg.randomization.reinit == Reinit.layer_default
    assert make(["randomization=bottom_up"]).randomization.order == Order.bottom_up


def test_profile_fills_only_what_was_left_open():
    cfg = resolve_profile(make(["profile=paper", "randomization.reinit=uniform"]))
    assert cfg.randomization.reinit == Reinit.uniform
    assert cfg.similarity.ssim_window.value == "window5" and cfg.similarity.hog_correlation.value == "pearson"


def test_bad_keys_and_values_fail_at_composition_with_the_key_named():
    with pytest.raises(ConfigCompositionException, match="n_imgs"):
        make(["n_imgs=3"])
    with pytest.raises((ConfigCompositionException, ValidationError), match="n_images"):
        make(["n_images=many"])
    with pytest.raises((ConfigCompositionException, ValidationError), match="order"):
        make(["randomization.order=sideways"])
    with pytest.raises(ConfigCompositionException, match="model/resnet9000"):
        make(["model=resnet9000"])
    with pytest.raises(ConfigCompositionException, match="method/gradinet"):
        make(["method=[gradinet]"])


def test_empty_method_list_composes_to_nothing():
    assert make(["method=[]"]).method == {}


def test_verdict_rule_is_typed_and_does_not_change_the_run_id():
    from benchmark import store
    from benchmark.config import VerdictRule

    default, threshold = make(), make(["verdict=threshold", "verdict.stage=fc1", "verdict.threshold=0.4"])
    assert default.verdict.rule == VerdictRule.calibration_band and default.verdict.stage == "last"
    assert threshold.verdict.rule == VerdictRule.threshold and threshold.verdict.threshold == 0.4
    assert store.run_id(default, "cascading") == store.run_id(threshold, "cascading")  # a reading, not a result
    with pytest.raises((ConfigCompositionException, ValidationError), match="rule"):
        make(["verdict.rule=majority"])
    report = make(["verdict=threshold"], name="report")
    assert report.verdict.rule == VerdictRule.threshold and report.root == "results" and report.out is None


def test_every_method_option_holds_its_dataclass_fields_and_defaults():
    """The command line's defaults (the typed node ``method=<name>``) are the Python API's (the method's dataclass):
    the node has every setting of the image class and of its text twin, and building from the composed node gives
    the method a plain ``cls()`` gives. ``reduction: null`` means the text method's own default, and a text IG's
    ``baseline: 0.0`` its zero baseline."""
    import dataclasses

    from benchmark.methods import TEXT_METHODS, build_method

    checked = 0
    for name in method_nodes():
        settings = make([f"method=[{name}]"]).method[name]
        assert isinstance(settings, dict), (name, type(settings))
        for modality, registry in (("image", METHODS), ("text", TEXT_METHODS)):
            cls = registry.get(name)
            if cls is None:
                continue
            fields = [f.name for f in dataclasses.fields(cls) if f.init]
            assert set(fields) <= set(settings), f"method={name}: {set(fields) - set(settings)} missing from the node"
            if name in ("captum", "custom"):  # no defaults to build from: a class path, a target
                continue
            built, default = build_method(name, settings, modality), cls()
            for key in fields:
                value, expect = getattr(built, key), getattr(default, key)
                if (key, value, expect) == ("baseline", 0.0, "zero"):
                    continue
                assert value == expect, f"method={name} ({modality}): {key}={value!r}, {cls.__name__}() has {expect!r}"
                checked += 1
    assert checked > 40


def test_method_settings_are_typed_and_unknown_ones_are_refused():
    cfg = make(["method=[smoothgrad,lime]", "method.smoothgrad.n_samples=7", "method.lime.n_segments=12"])
    assert cfg.method["smoothgrad"] == {"n_samples": 7, "noise_level": 0.15, "reduction": None}
    assert cfg.method["lime"]["n_segments"] == 12 and cfg.method["lime"]["fill"] == "zero"
    with pytest.raises(ConfigCompositionException, match="samples"):
        make(["method=[smoothgrad]", "method.smoothgrad.samples=3"])  # a typo: no such key in SmoothGradSettings
    with pytest.raises((ConfigCompositionException, ValidationError), match="n_samples"):
        make(["method=[smoothgrad]", "method.smoothgrad.n_samples=abc"])
    with pytest.raises(ValueError, match=r"method.smoothgrad.samples=3: smoothgrad has no setting 'samples'; its "
                                         r"settings are \['n_samples', 'noise_level', 'reduction'\]"):
        make(["method=[smoothgrad]", "+method.smoothgrad.samples=3"])  # '+' adds it; to_experiment refuses it
