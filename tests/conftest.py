import copy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))


def pytest_configure(config):
    config.addinivalue_line("markers", "slurm: needs the one-node Slurm cluster of scripts/slurm_cluster.sh (root)")


class TinyCNN(nn.Module):
    """A small CNN built from nn.ReLU modules (what Captum's GuidedBackprop hooks)."""

    def __init__(self, functional: bool = False):
        super().__init__()
        self.functional = functional
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(6 * 7 * 7, 5)

    def forward(self, x):
        act = F.relu if self.functional else None
        x = self.conv1(x)
        x = act(x) if act else self.relu1(x)
        x = F.max_pool2d(x, 2)
        x = self.conv2(x)
        x = act(x) if act else self.relu2(x)
        x = F.max_pool2d(x, 2)
        return self.fc(x.flatten(1))


@pytest.fixture
def tiny_cnn():
    torch.manual_seed(0)
    return TinyCNN().eval()


@pytest.fixture
def digits_batch():
    """A handful of real digits in MNIST layout, (6, 1, 28, 28)."""
    from sklearn.datasets import load_digits

    from benchmark.data.digits import digits_as_mnist

    bunch = load_digits()
    return digits_as_mnist(bunch.images[:6]), torch.as_tensor(bunch.target[:6])


def smoke_cfg(tmp, *overrides):
    """The smoke experiment's config with results under ``tmp`` (checkpoints beside it)."""
    from hydra import compose, initialize_config_dir

    import common

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="model_randomization",
                      overrides=["experiment=smoke", f"results_root={tmp}", f"cache_dir={tmp.parent / 'cache'}",
                                 "progress=false", *overrides])
    return common.to_experiment(cfg)


@pytest.fixture(scope="session")
def _smoke_run(tmp_path_factory):
    from benchmark.model_randomization import run

    root = tmp_path_factory.mktemp("results")
    cfg = smoke_cfg(root, "n_images=12", "n_saved_images=12")
    return run(cfg), cfg


@pytest.fixture
def smoke(_smoke_run):
    """One finished smoke run (every method, 12 images) shared by the session: (run folder, its config copy)."""
    run_dir, cfg = _smoke_run
    return run_dir, copy.deepcopy(cfg)
