"""Typed configuration of a run: plain dataclasses, usable without Hydra.

The Hydra runners register these as the schema of ``conf/`` so a misspelt key or a value of
the wrong type fails at start with the key named. Closed choices are enums; OmegaConf
accepts their names from YAML and the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

# The closed choices (enums), defined in benchmark.choices and imported from here everywhere.
from benchmark.choices import (BatchNormStats, ConvInputGrad, Correlation, Device, Order, Profile,  # noqa: F401
                               Reinit, SsimWindow, Target, VerdictRule)
# How a field enters the run id (its group in the field's metadata), defined in benchmark.config_fields.
from benchmark.config_fields import (NEUTRAL_GROUPS, hashed_unless_default, neutral, hash_omitted,  # noqa: F401
                                     neutral_keys)


# numpy.histogram_bin_edges' rules, accepted by similarity.entropy_bins.
ENTROPY_BIN_RULES = ("auto", "fd", "doane", "scott", "stone", "rice", "sturges", "sqrt")


def check_entropy_bins(value: Any, key: str = "similarity.entropy_bins") -> None:
    """A whole number of bins (at least 1) or one of numpy's rules; ValueError with the key, the value and the fix."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{key}={value!r} must be a whole number of bins or one of {list(ENTROPY_BIN_RULES)}, "
                         "e.g. 100")
    if isinstance(value, int) and value < 1:
        raise ValueError(f"{key}={value} must be at least 1 bin; use e.g. {key}=100 (Quantus' default)")
    if isinstance(value, str) and value not in ENTROPY_BIN_RULES:
        raise ValueError(f"{key}={value!r} is not a bin rule; use a whole number of bins, e.g. 100, or one of "
                         f"numpy's rules {list(ENTROPY_BIN_RULES)}")


@dataclass
class ModelConfig:
    name: str = "cnn"
    # Path of a state dict to load instead of training (None: train, or load from the cache).
    # ImageNet models also take a torchvision weights name (DEFAULT, IMAGENET1K_V1, ...); None
    # leaves them random (offline smoke runs).
    weights: Optional[str] = None
    # ImageNet models: imagenet (torchvision's mean / std, the default) or minus_one_one (the
    # paper's Inception input, 2x - 1).
    input_scaling: Optional[str] = None
    # model=custom: an importable "module:attribute" naming an nn.Module, its class, or a function
    # returning one (called without arguments), e.g. my_models:make_net.
    target: Optional[str] = None
    # model=torchvision: any torchvision classification model by name, e.g. resnet18.
    arch: Optional[str] = None
    # Units to randomize, {unit name: [module paths]} in forward order. None: the architecture's
    # declared units, or (model=custom / torchvision) units derived from the forward pass.
    units: Any = None  # Optional[Dict[str, List[str]]]; Any because OmegaConf cannot override a None dict node
    # Module whose output GradCAM reads. None: the declared layer, or the last unit with a 4-D output.
    gradcam_layer: Optional[str] = None
    # model=custom: train the model on the run's data like the built-in models (false: use it as
    # model.target returns it, with model.weights loaded when given).
    train: bool = False
    # model=hf: a Hugging Face sequence-classification model by folder or hub name (model=minilm: the bundled
    # all-MiniLM-L6-v2). Text models only: the longest sentence read, in tokens (None: the model's maximum), and
    # the output a token map explains (logit | probability | loss; None: loss, the log-probability of the target).
    name_or_path: Optional[str] = hashed_unless_default(None)
    max_length: Optional[int] = hashed_unless_default(None)
    output: Optional[str] = hashed_unless_default(None)


@dataclass
class DataConfig:
    name: str = "digits"
    root: Optional[str] = None
    download: bool = False
    # Held-out fraction carved from the data when the set has no split of its own.
    holdout_fraction: float = 0.2
    split_seed: int = 0
    # Train on the first n_train images of the (already shuffled) train split only (None: all).
    n_train: Optional[int] = None
    # image_folder: file mapping WordNet ids to ImageNet class indices (one id per line in class
    # order, or Keras' imagenet_class_index.json); class subfolders named 0..999 need none.
    class_index: Optional[str] = None
    # Photographs: shorter side resized to `resize`, center crop of `crop` pixels (None: the
    # model's own, e.g. 342 / 299 for Inception v3). Smaller crops make quick runs.
    resize: Optional[int] = None
    crop: Optional[int] = None
    # data=planted (benchmark/data/planted.py): the square's side in pixels, and what decides the label
    # (pattern: the square's place; digit: the digit, the square a distractor).
    planted_size: int = hashed_unless_default(3)
    planted_variant: str = hashed_unless_default("pattern")
    # the images the squares are planted in: digits (scikit-learn's bundled digits) or mnist (the MNIST files under
    # data.root, both splits as data=mnist reads them)
    planted_base: str = hashed_unless_default("digits")
    # data=sentiment: some of amazon, imdb, yelp (None: all three). data=text_file: the sentence and label
    # columns (names with a header row, 0-based positions without; None: 0 and 1) and the delimiter (None: ","
    # for .csv, a tab otherwise).
    sources: Optional[List[str]] = hashed_unless_default(None)
    text_column: Any = hashed_unless_default(None)
    label_column: Any = hashed_unless_default(None)
    delimiter: Optional[str] = hashed_unless_default(None)


@dataclass
class TrainingConfig:
    """Adam on cross-entropy. ``training=code`` selects the paper's code: lr 1e-4, 50 / 100 epochs.

    Random labels get their own, smaller steps (``random_lr``, ``random_batch_size``): the larger ones do not
    memorize permuted digit labels (docs/reproducing.md).
    """

    epochs: int = 10  # true labels
    batch_size: int = 50
    lr: float = 1e-3
    weight_decay: float = 0.0
    # Random labels: train until the training accuracy on the permuted labels reaches the gate,
    # for at most max_epochs; a run that does not reach it fails. Memorizing wants more, smaller
    # steps than learning: random_lr / random_batch_size (None: lr / batch_size).
    memorization_gate: float = 0.95
    max_epochs: int = 100
    random_lr: Optional[float] = 3e-4
    random_batch_size: Optional[int] = 16
    # Torch threads while training. Float sums split across threads differ in their last bits, so
    # the trained weights depend on it: fixed (and part of the checkpoint key) rather than taken from
    # the machine or the launcher, so a run trains the same model with a sweep launcher or without.
    num_threads: int = 1


@dataclass
class RandomizationConfig:
    order: Order = Order.cascading
    # Units to randomize, by name (None: every unit the architecture declares).
    units: Optional[List[str]] = None
    # None: the profile decides (paper: truncated_normal, code: layer_default).
    reinit: Optional[Reinit] = None
    std: float = 0.01
    batchnorm_stats: BatchNormStats = BatchNormStats.keep
    # The fair null of the model randomization tests: every stage's units drawn a second time, from generators
    # derived from (seed, "null"), and the two randomized models' maps compared per image (null.parquet): how
    # similar maps are when only the input and the architecture are shared (verdict.rule=random_null reads it).
    # Off by default: it doubles the randomized stages' maps (the default run: 2 min 2 s, with it 3 min 22 s).
    fair_null: bool = False


@dataclass
class SimilarityConfig:
    metrics: List[str] = field(default_factory=lambda: ["spearman_abs", "spearman", "ssim", "hog"])
    # None: the profile decides (paper: window5 and pearson, code: gaussian and spearman).
    ssim_window: Optional[SsimWindow] = None
    hog_correlation: Optional[Correlation] = None
    # None: 16 pixels (the paper's code) when the map has at least 4 such cells a side,
    # else a quarter of the map's shorter side.
    hog_pixels_per_cell: Optional[int] = None
    hog_cells_per_block: int = 2
    percentile: float = 99.0
    # Histogram bins of the entropy metric (entropy_change, the efficient MPRT's score): a whole number of
    # equal-width bins (100, Quantus' default), or one of numpy's rules (ENTROPY_BIN_RULES) applied per image to
    # the reference map, clamped to [10, 200] as Quantus clamps its rules. Left out of the run id at its default.
    entropy_bins: Any = hashed_unless_default(100)


@dataclass
class SmoothMPRTConfig:
    """The smooth MPRT's denoising (``test=smooth_mprt``, Hedström et al. 2023): each map is the mean of the
    method's maps of ``n_samples`` noisy copies of the input, noise sd = ``noise_level`` * (max x - min x) per
    image, the last copy without noise (Quantus' ``nr_samples`` and ``noise_magnitude``). Left out of the run id
    at their defaults."""

    n_samples: int = hashed_unless_default(50)
    noise_level: float = hashed_unless_default(0.1)


@dataclass
class InputInvarianceConfig:
    """The input invariance test (``test=input_invariance``, Kindermans et al. 2019). ``shift``: the constant m
    added to the input, ``mean`` (the training split's per-channel mean), a number, or one number per channel;
    ``tolerance``: how far from identical a method's maps may be and still count as invariant (the mean
    difference of the min-max scaled maps, or 1 - similarity). Left out of the run id at their defaults."""

    shift: Any = hashed_unless_default("mean")
    tolerance: float = hashed_unless_default(1e-3)


@dataclass
class VerdictConfig:
    """The verdict rule of the reports (it reads results; it never changes them).

    At the judged stage, the ``confidence`` bootstrap interval [lo, hi] of the mean similarity
    over images is compared with a level L (the calibration band's upper edge, or ``threshold``):
    pass when hi <= L (the maps became as unrelated as unrelated maps), fail when lo > L (they
    stayed more similar), inconclusive when the interval contains L or too few images scored.
    """

    rule: VerdictRule = VerdictRule.calibration_band
    # "last" (every unit randomized; the random-label model), "first", or a stage's layer name.
    stage: str = "last"
    threshold: float = 0.5
    confidence: float = 0.95
    n_boot: int = 2000
    # Central share of the unrelated-map similarities that forms the calibration band.
    band_coverage: float = 0.95
    # What the band covers: "items", the similarities of single unrelated map pairs (tight for images of hundreds of
    # pixels), or "mean", the mean of as many unrelated pairs as the run has inputs (bootstrap): the band a mean over
    # a few dozen short sentences must be compared with (text models set it).
    band: str = "items"


@dataclass
class ExperimentConfig:
    """Everything that defines one run of a sanity check."""

    test: str = "model_randomization"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    # Method name -> its settings; the order is the order of tables and figures.
    method: Dict[str, Any] = field(default_factory=dict)
    # Settings applied to a method only if the run selects it (experiment configs use this so
    # that ``method=[...]`` on the command line still decides which methods run).
    method_settings: Dict[str, Any] = field(default_factory=dict)
    randomization: RandomizationConfig = field(default_factory=RandomizationConfig)
    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)
    # test=smooth_mprt only: the noisy copies each map is averaged over.
    smooth_mprt: SmoothMPRTConfig = field(default_factory=SmoothMPRTConfig)
    # test=input_invariance only: the input's shift and the tolerance of "invariant".
    input_invariance: InputInvarianceConfig = field(default_factory=InputInvarianceConfig)
    profile: Profile = Profile.paper
    target: Target = Target.predicted
    n_images: int = 32
    seed: int = 0
    device: Device = Device.auto
    # Bytes of activations one forward/backward chunk may hold, in MiB.
    memory_budget_mb: int = neutral("runtime", 1024)
    # Explain the stages of a model-randomization run together, computing the layers a stage leaves
    # unchanged once for all stages (models with steps(): all five). Same maps, bit for bit; fewer passes.
    share_unchanged_layers: bool = neutral("runtime", True)
    # Input gradient of convolutions with at most 3 input channels (a model's first layer): "auto" computes
    # it as a matrix product and shifted sums on a CPU, several times faster than oneDNN's kernel; equal to
    # PyTorch's "aten" kernel up to float32 rounding (the order of the sums differs).
    conv_input_grad: ConvInputGrad = neutral("runtime", ConvInputGrad.auto)
    # Held-out accuracy of every stage's model (forward passes over the whole held-out split).
    stage_accuracy: bool = neutral("runtime", True)
    # Maps of the first images kept in maps.npz for figures and re-checks.
    n_saved_images: int = 8
    # Images shown in the report's grid of maps.
    n_figure_images: int = neutral("report", 3)
    results_root: str = neutral("paths", "results")
    cache_dir: Optional[str] = neutral("paths", None)  # None: <results_root>/.cache
    overwrite: bool = neutral("paths", False)
    progress: bool = neutral("runtime", True)
    num_threads: Optional[int] = neutral("runtime", None)
    # With the default method list, methods the model cannot support (GradCAM on an MLP) are
    # skipped with a logged reason; the runners set this to false when method= is given.
    skip_unsupported_methods: bool = neutral("runtime", True)  # cfg.method holds what ran
    verdict: VerdictConfig = neutral("report", factory=VerdictConfig)
    # Modules imported before the config is read: the tests, methods, metrics and models they register are
    # selectable by name (plugins=[my_tests] test=logits_only). The names a run uses are result keys.
    plugins: List[str] = neutral("runtime", factory=list)


@dataclass
class ReportConfig:
    """The comparative report over every finished run under ``root`` (experiments/report.py)."""

    root: str = "results"
    out: Optional[str] = None  # None: <root>/report
    verdict: VerdictConfig = field(default_factory=VerdictConfig)
    # Similarity metric of the cross-run tables and figures; every metric is in summary.csv.
    metric: str = "spearman_abs"


# Keys that do not change a run's results, read off the fields' groups.
NON_RESULT_KEYS = neutral_keys(ExperimentConfig)

PROFILES: dict[Profile, dict[str, Any]] = {
    Profile.paper: {
        "reinit": Reinit.truncated_normal,
        "ssim_window": SsimWindow.window5,
        "hog_correlation": Correlation.pearson,
    },
    Profile.code: {
        "reinit": Reinit.layer_default,
        "ssim_window": SsimWindow.gaussian,
        "hog_correlation": Correlation.spearman,
    },
}


def resolve_profile(cfg: ExperimentConfig) -> ExperimentConfig:
    """Fill every setting left at None with the profile's value (in place, returned); a bad
    ``similarity.entropy_bins`` fails here, the first check of every run."""
    check_entropy_bins(cfg.similarity.entropy_bins)
    values = PROFILES[Profile(cfg.profile)]
    if cfg.randomization.reinit is None:
        cfg.randomization.reinit = values["reinit"]
    if cfg.similarity.ssim_window is None:
        cfg.similarity.ssim_window = values["ssim_window"]
    if cfg.similarity.hog_correlation is None:
        cfg.similarity.hog_correlation = values["hog_correlation"]
    return cfg
