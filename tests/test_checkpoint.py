"""llm.checkpoint: safetensors weights, optimizer state, atomic writes, clear errors."""

import os

import pytest
import safetensors.torch
import torch

from llm.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    optimizer_path,
    save_checkpoint,
    write_atomically,
)
from llm.model import GPTConfig, GPTModel
from llm.train import TrainLog, make_optimizer

TINY = GPTConfig(vocab_size=40, context_length=8, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0)


def tiny(seed=0, cfg=TINY):
    torch.manual_seed(seed)
    return GPTModel(cfg)


def trained_pair(seed=0):
    """A model and an optimizer with non-trivial state after one step."""
    model = tiny(seed)
    optimizer = make_optimizer(model, lr=1e-3)
    model(torch.randint(0, 40, (2, 8))).sum().backward()
    optimizer.step()
    return model, optimizer


def test_weights_and_config_round_trip(tmp_path):
    model = tiny()
    path = save_checkpoint(tmp_path / "model.safetensors", model)
    loaded = load_model(path)
    assert loaded.cfg == TINY
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_weights_are_a_plain_safetensors_file_with_the_config_in_its_metadata(tmp_path):
    path = save_checkpoint(tmp_path / "model.safetensors", tiny())
    tensors = safetensors.torch.load_file(path)
    assert "tok_emb.weight" in tensors and "blocks.1.att.qkv.weight" in tensors
    with safetensors.safe_open(path, framework="pt") as handle:
        assert '"emb_dim": 16' in handle.metadata()["config"]


def test_optimizer_state_and_log_round_trip(tmp_path):
    model, optimizer = trained_pair()
    log = TrainLog(step=7, tokens_seen=112, steps=[5], tokens=[80], train_losses=[3.5], val_losses=[3.6])
    path = save_checkpoint(tmp_path / "run.safetensors", model, optimizer, log)
    assert optimizer_path(path).name == "run.optimizer.pt"
    fresh_model = tiny(seed=1)
    fresh_optimizer = make_optimizer(fresh_model, lr=1e-3)
    assert load_checkpoint(path, fresh_model, fresh_optimizer) == log
    saved, loaded = optimizer.state_dict()["state"], fresh_optimizer.state_dict()["state"]
    assert saved.keys() == loaded.keys()
    for key in saved:
        assert torch.equal(saved[key]["exp_avg"], loaded[key]["exp_avg"])


def test_optimizer_state_is_loaded_with_weights_only(tmp_path, monkeypatch):
    model, optimizer = trained_pair()
    path = save_checkpoint(tmp_path / "run.safetensors", model, optimizer, TrainLog(step=1))
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real_load(*a, **k))
    load_checkpoint(path, tiny(), make_optimizer(tiny(), lr=1e-3))
    assert calls and all(call.get("weights_only") is True for call in calls)


def test_a_truncated_file_is_a_clear_error(tmp_path):
    path = save_checkpoint(tmp_path / "model.safetensors", tiny())
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        load_model(path)


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_model(tmp_path / "nothing.safetensors")


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "model.safetensors", tiny())
    with pytest.raises(CheckpointError, match=r"different configuration.*'n_layers': \(2, 3\)"):
        load_checkpoint(path, tiny(cfg=TINY.replace(n_layers=3)))


def test_a_file_not_written_by_save_checkpoint_is_refused(tmp_path):
    path = tmp_path / "foreign.safetensors"
    safetensors.torch.save_file({"x": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="was not written by save_checkpoint"):
        load_model(path)


def test_weights_and_optimizer_from_different_saves_are_detected(tmp_path):
    model, optimizer = trained_pair()
    path = tmp_path / "run.safetensors"
    save_checkpoint(path, model, optimizer, TrainLog(step=10))
    old_optimizer_file = optimizer_path(path).read_bytes()
    save_checkpoint(path, model, optimizer, TrainLog(step=20))
    optimizer_path(path).write_bytes(old_optimizer_file)  # as if the second save died midway
    with pytest.raises(CheckpointError, match="from step 10 but .* from step 20"):
        load_checkpoint(path, tiny(), make_optimizer(tiny(), lr=1e-3))


def test_an_interrupted_save_keeps_the_previous_file_and_leaves_no_litter(tmp_path, monkeypatch):
    model = tiny()
    path = save_checkpoint(tmp_path / "model.safetensors", model)
    before = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, tiny(seed=5))
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]


def test_write_atomically_creates_missing_folders(tmp_path):
    target = tmp_path / "a" / "b" / "file.txt"
    write_atomically(target, lambda tmp: open(tmp, "w").write("done"))
    assert target.read_text() == "done"
