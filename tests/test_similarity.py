import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from skimage.feature import hog
from skimage.metrics import structural_similarity

from benchmark.config import Correlation, SsimWindow
from benchmark.similarity import correlation, hog_similarity, spearman, ssim, tie_fraction


@pytest.fixture
def maps():
    rng = np.random.default_rng(0)
    a = rng.random((5, 28, 28))
    b = 0.5 * a + 0.5 * rng.random((5, 28, 28))
    a[:, :10] = 0.0  # ties, as in MNIST maps
    b[:, :6] = 0.0
    b[:, -2:] = 1.0
    return a, b


def test_spearman_matches_scipy_with_ties(maps):
    a, b = maps
    s = spearman(a, b)
    ref = [spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b)]
    np.testing.assert_allclose(s.value, ref, rtol=0, atol=1e-12)
    assert all(r is None for r in s.nan_reason)


def test_pearson_matches_scipy(maps):
    a, b = maps
    s = correlation(a, b, Correlation.pearson)
    ref = [pearsonr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b)]
    np.testing.assert_allclose(s.value, ref, atol=1e-12)


def test_tie_fraction_counts_values_that_repeat():
    x = np.array([[0, 0, 1, 2, 3, 3, 3, 4.0]])
    assert tie_fraction(x)[0] == pytest.approx(5 / 8)
    a, b = np.array([[0, 0, 1, 2.0]]), np.array([[1, 2, 3, 4.0]])
    assert spearman(a, b).tie_fraction[0] == pytest.approx(0.5)


def test_tie_fraction_equals_a_count_by_np_unique():
    rng = np.random.default_rng(3)
    x = np.round(rng.normal(size=(20, 300)), 1)  # many repeated values
    x[0] = 7.0  # all tied
    x[1] = np.arange(300)  # none tied
    expected = []
    for row in x:
        _, inverse, counts = np.unique(row, return_inverse=True, return_counts=True)
        expected.append((counts[inverse] > 1).mean())
    np.testing.assert_array_equal(tie_fraction(x), expected)
    assert tie_fraction(x)[0] == 1.0 and tie_fraction(x)[1] == 0.0


@pytest.mark.parametrize("window", list(SsimWindow))
def test_ssim_matches_skimage_2d(maps, window):
    a, b = maps
    s = ssim(a, b, window)
    kw = {"gaussian_weights": True, "sigma": 1.5} if window == SsimWindow.gaussian else {"win_size": 5}
    ref = [structural_similarity(x, y, data_range=1.0, **kw) for x, y in zip(a, b)]
    np.testing.assert_allclose(s.value, ref, atol=1e-12)
    assert np.all(np.isnan(s.tie_fraction))


@pytest.mark.parametrize("kind", list(Correlation))
def test_hog_matches_skimage(maps, kind):
    a, b = maps
    s = hog_similarity(a, b, pixels_per_cell=7, cells_per_block=2, kind=kind)
    corr = spearmanr if kind == Correlation.spearman else pearsonr
    ref = []
    for x, y in zip(a, b):
        fx = hog(x, orientations=9, pixels_per_cell=(7, 7), cells_per_block=(2, 2))
        fy = hog(y, orientations=9, pixels_per_cell=(7, 7), cells_per_block=(2, 2))
        ref.append(corr(fx, fy).statistic)
    np.testing.assert_allclose(s.value, ref, atol=1e-12)


def test_constant_map_is_nan_with_reason(maps):
    a, b = maps
    a = a.copy()
    b = b.copy()
    a[1] = 0.3
    b[2] = 0.0
    b[3, 0, 0] = np.inf
    for scores in (spearman(a, b), ssim(a, b), hog_similarity(a, b, 7)):
        assert np.isnan(scores.value[1]) and scores.nan_reason[1] == "constant_map_original"
        assert np.isnan(scores.value[2]) and scores.nan_reason[2] == "constant_map_randomized"
        assert np.isnan(scores.value[3]) and scores.nan_reason[3] == "non_finite_map"
        assert np.isfinite(scores.value[[0, 4]]).all()


def test_identical_maps_score_one(maps):
    a, _ = maps
    assert np.allclose(spearman(a, a).value, 1.0)
    assert np.allclose(ssim(a, a).value, 1.0)
    assert np.allclose(hog_similarity(a, a, 7).value, 1.0)
