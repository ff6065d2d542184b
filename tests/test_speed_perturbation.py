"""experiments/speed.py --perturbation at a small size: the JSON line, and Captum doing the suite's work."""

import json
import sys

import pytest

pytest.importorskip("captum")
pytest.importorskip("quantus")

NAMES = ["occlusion", "leave_one_out", "lime"]


@pytest.mark.e2e
def test_perturbation_mode_times_identical_work_against_captum_and_quantus(tmp_path, monkeypatch, capsys):
    import speed

    monkeypatch.setattr(sys, "argv", ["speed.py", "--perturbation", "--data", "digits", "--n-images", "2",
                                      "--stages", "2", "--lime-samples", "60", "--results-root", str(tmp_path),
                                      "--epochs", "1", "--threads", "1", "--profile"])
    speed.main()
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    assert {"perturbation", "profile", "ratios", "ratios_captum_default", "ratios_quantus", "ratios_all_together", "seconds",
            "agreement", "perturbations_per_eval", "quantus_mprt_mean"} <= set(result)
    setup = result["perturbation"]
    assert setup["images"] == 2 and setup["stages"] == 2 and set(setup["methods"]) == set(NAMES)
    assert setup["methods"]["occlusion"]["window"] == 4 and setup["methods"]["lime"]["n_samples"] == 60
    assert set(result["ratios"]) == set(NAMES) and all(v > 0 for v in result["ratios"].values())
    for way in ("a", "b", "b_tuned", "c"):
        assert all(result["seconds"][f"{way}/{name}"] > 0 for name in NAMES)
    assert result["seconds"]["a/all"] > 0
    assert result["perturbations_per_eval"]["b"] == {name: 1 for name in NAMES}
    tuned = result["perturbations_per_eval"]["b_tuned"]
    assert tuned["occlusion"] == 13 * 13 and tuned["lime"] == 60 and tuned["leave_one_out"] > 4  # the superpixels

    # Where the suite's time goes: the forward passes and the ridge fits clocked
    assert result["profile"]["phases"]["forward chunks (_chunk)"]["calls"] > 0
    assert result["profile"]["phases"]["ridge fits (sklearn Ridge.fit)"]["calls"] == 2 * 2  # images x stages

    # Identical work: the same maps up to float rounding, the same Spearman scores up to the rank flips of near-tied
    # values that rounding causes (differently batched forward passes: 0.0048 for occlusion on an AVX-512 / AMX Xeon,
    # below 1e-6 on the machine before)
    for name in NAMES:
        row = result["agreement"][name]
        for way in ("b", "b_tuned"):
            assert row[f"spearman_max_abs_diff_{way}"] < 1e-2, (name, way)
            assert row[f"spearman_max_abs_diff_{way}_vs_together"] < 1e-2, (name, way)
            assert set(row[f"maps_{way}"]) == {"stage0", "stage1"}
            for diff in row[f"maps_{way}"].values():
                assert diff["max_abs_over_max_value"] < 1e-4, (name, way, diff)
