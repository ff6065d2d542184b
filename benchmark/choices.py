"""The closed choices of the config: enums whose names OmegaConf accepts from YAML and the command line."""

from __future__ import annotations

from enum import Enum


class Profile(str, Enum):
    """Fidelity profile for the paper-versus-code conflicts of PROTOCOL.md."""

    paper = "paper"
    code = "code"


class Order(str, Enum):
    cascading = "cascading"
    independent = "independent"
    bottom_up = "bottom_up"


class Reinit(str, Enum):
    """How a randomized unit's parameters are redrawn."""

    layer_default = "layer_default"  # each layer's own initializer (the paper's code)
    truncated_normal = "truncated_normal"  # N(0, std) truncated at 2 std (the paper's text)
    uniform = "uniform"  # U(-a, a) with the variance of N(0, std^2)


class BatchNormStats(str, Enum):
    keep = "keep"  # running statistics stay as trained (the paper: they were not trainable)
    reset = "reset"  # running mean 0, variance 1


class Target(str, Enum):
    predicted = "predicted"  # argmax of the model being explained, recomputed per stage
    original_prediction = "original_prediction"  # argmax of the trained model, fixed
    label = "label"  # the data set's label


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class ConvInputGrad(str, Enum):
    auto = "auto"  # convolutions with few input channels: a matrix product and shifted sums on a CPU
    aten = "aten"  # PyTorch's own kernel everywhere (the maps of Captum on the same model, bit for bit)


class SsimWindow(str, Enum):
    gaussian = "gaussian"  # scikit-image Gaussian window, sd 1.5 (the paper's code)
    window5 = "window5"  # uniform 5x5 window (the paper's text)


class Correlation(str, Enum):
    spearman = "spearman"
    pearson = "pearson"


class VerdictRule(str, Enum):
    """How a method's similarity at the judged stage becomes pass / fail / inconclusive."""

    # Compared with the upper edge of the run's calibration band (unrelated maps).
    calibration_band = "calibration_band"
    # Compared with a fixed similarity, ``verdict.threshold``.
    threshold = "threshold"
    # Compared with the similarity of two independently randomized models' maps at the same stage (the fair null,
    # ``randomization.fair_null``); tests without such a null read the calibration band.
    random_null = "random_null"
