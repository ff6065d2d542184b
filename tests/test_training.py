import logging

import torch

from benchmark.config import DataConfig, TrainingConfig
from benchmark.data import load_dataset
from benchmark.models import get_architecture
from benchmark.training import checkpoint_key, train_model


def test_checkpoint_cache_reuses_detects_corruption_and_keys_on_labels(tmp_path, caplog):
    data = load_dataset(DataConfig(n_train=100))
    arch = get_architecture("cnn")
    training = TrainingConfig(epochs=1)
    first = train_model(arch, data, training, 0, torch.device("cpu"), tmp_path, progress=False)
    assert not first.from_cache and first.epochs == 1
    again = train_model(arch, data, training, 0, torch.device("cpu"), tmp_path, progress=False)
    assert again.from_cache
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(),
                                                  again.model.state_dict().values()))
    ckpt = next((tmp_path / "checkpoints").glob("*.pt"))
    ckpt.write_bytes(ckpt.read_bytes()[:-100])  # truncated
    with caplog.at_level(logging.WARNING):
        third = train_model(arch, data, training, 0, torch.device("cpu"), tmp_path, progress=False)
    assert not third.from_cache and "does not match its hash" in caplog.text
    assert checkpoint_key(arch, data, training, 0, "true") != checkpoint_key(arch, data, training, 0, "random")
    assert checkpoint_key(arch, data, training, 0) != checkpoint_key(arch, data, training, 1)
    assert checkpoint_key(arch, data, training, 0) != checkpoint_key(arch, data, TrainingConfig(epochs=2), 0)
