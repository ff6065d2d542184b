"""Reports: calibration in the run, summaries and verdicts, the comparative report, a real browser."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from benchmark import store
from benchmark.config import VerdictConfig
from benchmark.model_randomization import run
from benchmark.report import write_comparative_report
from benchmark.report.stats import check_verdict, decide, judged_stage, mean_ci
from conftest import smoke_cfg

ROOT = Path(__file__).resolve().parents[1]
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


# --- calibration, computed in the run -------------------------------------------------------------

@pytest.mark.e2e
def test_calibration_is_written_hashed_and_kept_out_of_the_scores(smoke):
    run_dir, cfg = smoke
    assert "calibration.parquet" in store.read_status(run_dir)["files"]
    assert "summary.csv" in store.read_status(run_dir)["files"]
    scores = pd.read_parquet(run_dir / "scores.parquet")
    assert set(scores.method) == set(cfg.method)  # no calibration rows among the methods' scores
    cal = pd.read_parquet(run_dir / "calibration.parquet")
    n, metrics = cfg.n_images, list(cfg.similarity.metrics)
    assert len(cal[cal.kind == "noise_vs_noise"]) == n * len(metrics)
    assert len(cal[cal.kind == "map_vs_noise"]) == n * len(metrics) * len(cfg.method)
    assert set(cal.run_id) == {run_dir.name} and set(cal.seed) == {cfg.seed}
    means = cal.groupby("metric").value.mean()
    assert means.drop("hog").abs().max() < 0.05  # unrelated maps: near 0 (the paper's appendix)
    assert abs(means["hog"]) < 0.3


@pytest.mark.e2e
def test_calibration_noise_is_the_documented_draw_and_rescores(smoke):
    """Noise vs noise re-drawn here from (seed, "calibration", a|b, image) and scored with scipy reproduces the file."""
    import torch

    from benchmark import rng
    from benchmark.postprocess import abs_map

    run_dir, cfg = smoke
    cal = pd.read_parquet(run_dir / "calibration.parquet")
    nn = cal[(cal.kind == "noise_vs_noise") & (cal.metric == "spearman_abs")].set_index("image").value
    for image in (0, 5):
        a, b = (torch.randn((1, 1, 28, 28), generator=rng.generator(cfg.seed, "calibration", w, image)) for w in "ab")
        ref = spearmanr(abs_map(a).ravel(), abs_map(b).ravel()).statistic
        assert nn[image] == pytest.approx(ref, abs=1e-6)


# --- statistics and verdicts ------------------------------------------------------------------------

def test_bootstrap_interval_matches_the_normal_approximation():
    x = np.random.default_rng(1).normal(0.3, 0.2, size=400)
    lo, hi = mean_ci(x, 0.95, 4000, seed=0)
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x))
    assert lo < x.mean() < hi
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.12)
    assert mean_ci(x, 0.95, 4000, seed=0) == (lo, hi)  # its own generator: reproducible
    assert mean_ci(np.ones(5), 0.95, 100, 0) == (1.0, 1.0) and np.isnan(mean_ci(np.ones(1), 0.95, 100, 0)[0])


def _row(lo, hi, n=10, n_nan=0):
    return pd.Series({"ci_low": lo, "ci_high": hi, "mean": (lo + hi) / 2, "n_images": n, "n_nan": n_nan,
                      "nan_reasons": "constant_map_original: 6" if n_nan else ""})


def test_verdict_rule_pass_fail_inconclusive():
    rule = VerdictConfig()
    assert decide(_row(0.01, 0.05), 0.07, rule).outcome == "pass"
    assert decide(_row(0.10, 0.20), 0.07, rule).outcome == "fail"
    assert decide(_row(0.05, 0.09), 0.07, rule).outcome == "inconclusive"
    assert decide(_row(0.0, 0.01, n=10, n_nan=6), 0.07, rule).outcome == "inconclusive"  # too few scored
    assert decide(_row(0.0, 0.01), float("nan"), rule).outcome == "inconclusive"  # no calibration band
    assert decide(None, 0.07, rule).outcome == "inconclusive"
    stages = pd.DataFrame({"stage": [0, 1, 2, 3], "layer": ["original", "logits", "fc1", "conv1"]})
    assert judged_stage(stages, "last") == 3 and judged_stage(stages, "first") == 1
    assert judged_stage(stages, "fc1") == 2 and judged_stage(stages, "conv9") is None


@pytest.mark.parametrize("field,value,match", [("confidence", 1.5, "verdict.confidence=1.5"),
                                               ("n_boot", 10, "verdict.n_boot=10"),
                                               ("threshold", 3.0, "verdict.threshold=3.0"),
                                               ("band_coverage", 0.2, "verdict.band_coverage=0.2")])
def test_bad_verdict_settings_fail_with_the_key(field, value, match):
    rule = VerdictConfig()
    setattr(rule, field, value)
    with pytest.raises(ValueError, match=re.escape(match)):
        check_verdict(rule)


@pytest.mark.e2e
def test_summary_csv_traces_back_to_the_scores(smoke):
    run_dir, _ = smoke
    scores = pd.read_parquet(run_dir / "scores.parquet")
    summary = pd.read_csv(run_dir / "summary.csv")
    mean = scores.groupby(["stage", "method", "metric"]).value.mean()
    nans = scores.value.isna().groupby([scores.stage, scores.method, scores.metric]).sum()
    for r in summary.itertuples():
        assert r.mean == pytest.approx(mean[(r.stage, r.method, r.metric)], abs=1e-12, nan_ok=True)
        assert r.n_nan == nans[(r.stage, r.method, r.metric)]
        if np.isfinite(r.ci_low) and r.ci_low != r.ci_high:
            assert r.ci_low <= r.mean <= r.ci_high
    judged = summary[summary.verdict.notna()]
    assert set(judged.stage) == {4} and len(judged) == summary.method.nunique() * summary.metric.nunique()
    cal = pd.read_parquet(run_dir / "calibration.parquet")
    hi = np.quantile(cal[cal.metric == "spearman_abs"].value.dropna(), 0.975)
    assert summary[summary.metric == "spearman_abs"].band_high.iloc[0] == pytest.approx(hi)


@pytest.mark.e2e
def test_controls_get_the_verdicts_a_working_rule_must_give(smoke):
    run_dir, _ = smoke
    s = pd.read_csv(run_dir / "summary.csv")
    v = s[s.verdict.notna()].set_index(["method", "metric"]).verdict
    assert (v.loc["edge"] == "fail").all()  # identical maps at every stage
    assert (v.loc["noise"] == "pass").all()  # unrelated maps by construction


@pytest.mark.e2e
def test_run_report_holds_what_a_reader_needs(smoke):
    run_dir, _ = smoke
    md = (run_dir / "report.md").read_text()
    for heading in ("## Verdicts", "Rule `calibration_band`", "## Beside the paper", "## Calibration",
                    "## The model's own output per stage", "## Honesty", "## Maps"):
        assert heading in md, heading
    for name in ("similarity_spearman_abs", "maps_abs_image0", "maps_signed_image0", "model_output"):
        assert (run_dir / "figures" / f"{name}.png").exists(), name
    html = (run_dir / "report.html").read_text()
    assert not re.search(r"""(src|href)=['"]?(https?:)?//""", html)  # self-contained: nothing fetched
    assert html.count("<figcaption>") == html.count("<img")


# --- the comparative report -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sweep(_smoke_run, tmp_path_factory):
    """The shared smoke run, a second seed (3 methods), and a run that failed, under one root."""
    root = tmp_path_factory.mktemp("sweep")
    first, _ = _smoke_run
    shutil.copytree(first, root / "model_randomization" / first.name)
    second = run(smoke_cfg(root, "seed=1", "method=[gradient,guided_backprop,edge,noise]"))
    failed = root / "model_randomization" / "cnn_digits_cascading_s2_broken"
    started = store.mark_running(failed)
    store.mark_failed(failed, started, RuntimeError("CUDA out of memory"))
    return root, first.name, second.name


@pytest.mark.e2e
def test_comparative_report_lays_out_every_run_and_lists_the_skipped(sweep):
    root, first, second = sweep
    out = write_comparative_report(root)
    html, md = (out / "report.html").read_text(), (out / "report.md").read_text()
    for run_id in (first, second):
        assert run_id in md
    assert "cnn_digits_cascading_s2_broken" in md and "CUDA out of memory" in md
    assert "seed 0" in md and "seed 1" in md and "## Provenance of every run used" in md
    verdicts = pd.read_csv(out / "verdicts.csv")
    assert set(verdicts.run_id) == {first, second}
    for run_id in (first, second):  # the same numbers as each run's own summary
        own = pd.read_csv(root / "model_randomization" / run_id / "summary.csv")
        own = own[own.verdict.notna()].set_index(["method", "metric"])
        mine = verdicts[verdicts.run_id == run_id].set_index(["method", "metric"])
        assert (mine.verdict == own.verdict.reindex(mine.index)).all()
        assert np.allclose(mine["mean"], own["mean"].reindex(mine.index), equal_nan=True)
    assert html.count("<img") == len(list((out / "figures").glob("*.png"))) >= 1


@pytest.mark.e2e
def test_report_runner_with_a_different_rule_and_bad_input(sweep, tmp_path):
    root, first, _ = sweep
    cmd = [sys.executable, str(ROOT / "experiments" / "report.py"), f"root={root}", f"out={tmp_path / 'rep'}",
           "verdict=threshold", "verdict.stage=fc1", "metric=spearman"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Rule `threshold`" in md and "stage 'fc1'" in md and "the fixed similarity 0.5" in md
    v = pd.read_csv(tmp_path / "rep" / "verdicts.csv")
    assert set(v.layer.dropna()) == {"fc1"}
    for bad, match in (([f"root={tmp_path / 'nope'}"], "is not a folder"), (["metric=pearsn"], "metric='pearsn'")):
        r = subprocess.run(cmd[:2] + [f"root={root}", *bad], capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 2 and match in r.stdout + r.stderr, (bad, r.stderr[-1000:])
    assert not (tmp_path / "nope").exists()  # a report only reads: Hydra made no folder either


# --- a real browser ---------------------------------------------------------------------------------

def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


_PROBE = ("<script>window.addEventListener('load',()=>{const i=[...document.images];"
          "document.body.setAttribute('data-images',i.length);"
          "document.body.setAttribute('data-loaded',i.filter(x=>x.complete&&x.naturalWidth>0).length);});</script>")


def dump_dom(browser, html, tmp, script):
    """The DOM of ``html`` after ``script`` (a <script> block appended to its body) ran in the headless browser."""
    probe = tmp / "probe.html"
    probe.write_text(html.replace("</body>", script + "</body>"))
    out = subprocess.run([browser, *BROWSER_FLAGS, f"--user-data-dir={tmp / 'profile'}", "--dump-dom",
                          probe.as_uri()], capture_output=True, text=True, timeout=120)
    return out.stdout, out.stderr


def _images_loaded(browser, html, tmp):
    dom, err = dump_dom(browser, html, tmp, _PROBE)
    body = re.search(r"<body[^>]*data-images=\"(\d+)\"[^>]*data-loaded=\"(\d+)\"", dom)
    assert body, f"the page's load handler did not run: {err[-1000:]}"
    return int(body.group(1)), int(body.group(2))


@pytest.mark.e2e
def test_report_html_renders_in_a_headless_browser(smoke, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium here: install it with `apt-get install chromium` (Debian; .ci/run does this)")
    run_dir, _ = smoke
    html = (run_dir / "report.html").read_text()
    n, loaded = _images_loaded(browser, html, tmp_path)
    assert n == html.count("<img") >= 7 and loaded == n
    broken = html.replace("base64,iVBOR", "base64,AAAA", 1)  # the probe notices a broken image
    assert _images_loaded(browser, broken, tmp_path)[1] == n - 1
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *BROWSER_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                    "--window-size=1366,2400", (run_dir / "report.html").as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape == (2400, 1366)
    assert img.std() > 20  # text, tables and figures, not a blank page


def test_large_maps_are_shrunk_by_block_means_before_drawing():
    from skimage.measure import block_reduce

    from benchmark.report.figures import _shrink, maps_figure

    rng = np.random.default_rng(0)
    a = rng.random((299, 299)).astype(np.float32)
    np.testing.assert_allclose(_shrink(a[None], 3), block_reduce(a[:297, :297], (3, 3), np.mean), rtol=1e-6)
    assert np.array_equal(_shrink(a, 1), a)
    arrays = {"images": rng.random((1, 3, 299, 299)).astype(np.float32),
              "m/abs": rng.random((2, 1, 1, 299, 299)).astype(np.float16)[:, 0]}
    fig = maps_figure(arrays, ["m"], ["original", "logits"], 0, "abs")
    mosaic = fig.axes[0].images[0].get_array()
    assert mosaic.dtype == np.uint8 and mosaic.shape[0] == 99  # one row of 99-pixel tiles
