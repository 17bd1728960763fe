"""llm.checkpoint: one safetensors file per checkpoint, replaced atomically,
checked completely before anything is loaded, and never unpickled."""

import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm import checkpoint
from llm.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    read_weights,
    save_checkpoint,
)
from llm.errors import LLMError
from llm.train import TrainLog, make_optimizer

from conftest import ROOT


def trained_pair(make_tiny_model, seed=0):
    """A model and an optimizer with non-trivial state after one step."""
    model = make_tiny_model(seed)
    optimizer = make_optimizer(model, lr=1e-3)
    model(torch.randint(0, 64, (2, 8))).sum().backward()
    optimizer.step()
    return model, optimizer


def same_weights(a, b) -> bool:
    first, second = a.state_dict(), b.state_dict()
    return first.keys() == second.keys() and all(
        torch.equal(first[name], second[name]) for name in first
    )


def rewrite(path: Path, change_tensors=None, change_metadata=None) -> None:
    """Rewrite a checkpoint with some tensors or metadata changed (a crafted file)."""
    with safetensors.safe_open(path, framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    if change_tensors:
        change_tensors(tensors)
    if change_metadata:
        change_metadata(metadata)
    safetensors.torch.save_file(tensors, path, metadata)


def test_weights_and_config_round_trip(tmp_path, make_tiny_model, tiny_config):
    model = make_tiny_model()
    path = save_checkpoint(model, tmp_path / "model.safetensors")
    loaded = load_model(path)
    assert loaded.cfg == tiny_config and same_weights(model, loaded)


def test_a_checkpoint_is_one_plain_safetensors_file(tmp_path, make_tiny_model):
    model, optimizer = trained_pair(make_tiny_model)
    path = save_checkpoint(
        model, tmp_path / "run.safetensors", optimizer=optimizer, state={"step": 1}
    )
    assert os.listdir(tmp_path) == ["run.safetensors"]
    tensors = safetensors.torch.load_file(path)
    assert "tok_emb.weight" in tensors and "blocks.1.att.qkv.weight" in tensors
    assert "optimizer/0/exp_avg" in tensors and "optimizer/0/step" in tensors
    with safetensors.safe_open(path, framework="pt") as handle:
        metadata = handle.metadata()
    assert json.loads(metadata["config"])["emb_dim"] == 32
    assert json.loads(metadata["state"]) == {"step": 1}
    assert json.loads(metadata["optimizer"])["param_groups"][0]["lr"] == 1e-3


def test_load_model_reads_only_the_model_tensors(tmp_path, make_tiny_model):
    model, optimizer = trained_pair(make_tiny_model)
    path = save_checkpoint(model, tmp_path / "run.safetensors", optimizer=optimizer)
    tensors, _ = read_weights(path)
    assert set(tensors) == set(model.state_dict())
    assert same_weights(load_model(path), model)


def test_optimizer_state_and_log_round_trip_exactly(tmp_path, make_tiny_model):
    model, optimizer = trained_pair(make_tiny_model)
    log = TrainLog(
        step=7,
        tokens_seen=112,
        steps=[5],
        tokens=[80],
        train_losses=[3.5],
        val_losses=[1 / 3],
        rng_state={"cpu": torch.get_rng_state().tolist()},
    )
    path = save_checkpoint(
        model, tmp_path / "run.safetensors", optimizer=optimizer, state=log.to_dict()
    )
    fresh_model = make_tiny_model(seed=1)
    fresh_optimizer = make_optimizer(fresh_model, lr=5e-2)
    state = load_checkpoint(path, fresh_model, fresh_optimizer)
    assert TrainLog.from_dict(state) == log
    assert same_weights(fresh_model, model)
    saved, loaded = optimizer.state_dict(), fresh_optimizer.state_dict()
    assert saved["param_groups"] == loaded["param_groups"]
    assert saved["state"].keys() == loaded["state"].keys()
    for index, values in saved["state"].items():
        assert values.keys() == loaded["state"][index].keys()
        for key, value in values.items():
            assert torch.equal(value, loaded["state"][index][key]), (index, key)


def test_nothing_is_ever_unpickled(tmp_path, make_tiny_model, monkeypatch):
    model, optimizer = trained_pair(make_tiny_model)

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint must not be unpickled")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    path = save_checkpoint(
        model, tmp_path / "run.safetensors", optimizer=optimizer, state={"step": 1}
    )
    load_checkpoint(path, make_tiny_model(), make_optimizer(make_tiny_model(), 1e-3))
    load_model(path)


def test_checkpoint_errors_are_llm_errors():
    assert issubclass(CheckpointError, LLMError)


def test_a_truncated_file_is_a_clear_error(tmp_path, make_tiny_model):
    path = save_checkpoint(make_tiny_model(), tmp_path / "model.safetensors")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        load_model(path)


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_model(tmp_path / "nothing.safetensors")


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path, make_tiny_model):
    path = save_checkpoint(make_tiny_model(), tmp_path / "model.safetensors")
    with pytest.raises(
        CheckpointError, match=r"different configuration.*'n_layers': \(2, 3\)"
    ):
        load_checkpoint(path, make_tiny_model(n_layers=3))


def test_a_file_not_written_by_save_checkpoint_is_refused(tmp_path):
    path = tmp_path / "foreign.safetensors"
    safetensors.torch.save_file({"x": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="was not written by save_checkpoint"):
        load_model(path)


def test_files_of_the_first_format_still_load(tmp_path, make_tiny_model):
    model = make_tiny_model()
    path = save_checkpoint(model, tmp_path / "old.safetensors")
    rewrite(
        path,
        change_metadata=lambda metadata: metadata.update(
            format="llm-from-scratch-book/1", step="0"
        ),
    )
    assert same_weights(load_model(path), model)


def test_state_must_be_plain_data_and_nothing_is_written_otherwise(
    tmp_path, make_tiny_model
):
    with pytest.raises(TypeError, match="state must be plain data"):
        save_checkpoint(
            make_tiny_model(),
            tmp_path / "model.safetensors",
            state={"weights": torch.zeros(2)},
        )
    assert os.listdir(tmp_path) == []


def test_an_interrupted_save_keeps_the_previous_file_and_leaves_no_litter(
    tmp_path, make_tiny_model, monkeypatch
):
    path = save_checkpoint(make_tiny_model(), tmp_path / "model.safetensors")
    before = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(make_tiny_model(seed=5), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.safetensors"]


# A process that starts to save a checkpoint of a model of `sys.argv[2]`'s seed
# to `sys.argv[1]`, and says so when the temporary file is half written.
SLOW_SAVE = """
import sys, time
import safetensors.torch
import torch
from llm.checkpoint import save_checkpoint
from llm.model import GPTConfig, GPTModel
from llm.train import make_optimizer

def slow_save_file(tensors, filename, metadata=None):
    with open(filename, "wb") as handle:
        handle.write(b"the first part of a checkpoint")
    print("half written", flush=True)
    time.sleep(600)

safetensors.torch.save_file = slow_save_file
torch.manual_seed(int(sys.argv[2]))
model = GPTModel(GPTConfig(vocab_size=64, context_length=16, emb_dim=32, n_heads=2,
                           n_layers=2, drop_rate=0.0))
save_checkpoint(model, sys.argv[1], optimizer=make_optimizer(model, 1e-3))
"""


def test_a_save_killed_midway_leaves_the_previous_checkpoint_loadable(
    tmp_path, make_tiny_model
):
    model, optimizer = trained_pair(make_tiny_model)
    path = save_checkpoint(
        model, tmp_path / "run.safetensors", optimizer=optimizer, state={"step": 1}
    )
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_SAVE, str(path), "7"],
        stdout=subprocess.PIPE,
        env=environment,
        text=True,
    )
    try:
        assert child.stdout.readline() == "half written\n"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    leftovers = [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    assert len(leftovers) == 1 and str(child.pid) in leftovers[0]

    # The previous checkpoint is intact: weights, optimizer state and log
    restored = make_tiny_model(seed=3)
    restored_optimizer = make_optimizer(restored, lr=1e-3)
    assert load_checkpoint(path, restored, restored_optimizer) == {"step": 1}
    assert same_weights(restored, model)
    saved_state = optimizer.state_dict()["state"]
    loaded_state = restored_optimizer.state_dict()["state"]
    assert all(
        torch.equal(saved_state[i]["exp_avg"], loaded_state[i]["exp_avg"])
        for i in saved_state
    )

    # The next save removes what the killed process left behind
    save_checkpoint(make_tiny_model(seed=4), path)
    assert os.listdir(tmp_path) == ["run.safetensors"]


def test_a_rejected_optimizer_state_leaves_model_and_optimizer_unchanged(
    tmp_path, make_tiny_model
):
    model, _ = trained_pair(make_tiny_model)
    # Saved with one parameter group; make_optimizer makes two
    one_group = torch.optim.AdamW(model.parameters(), lr=1e-3)
    path = save_checkpoint(model, tmp_path / "run.safetensors", optimizer=one_group)
    target, target_optimizer = trained_pair(make_tiny_model, seed=1)
    weights_before = {k: v.clone() for k, v in target.state_dict().items()}
    optimizer_before = target_optimizer.state_dict()
    with pytest.raises(CheckpointError, match="1 parameter groups, this optimizer 2"):
        load_checkpoint(path, target, target_optimizer)
    assert all(
        torch.equal(weights_before[k], v) for k, v in target.state_dict().items()
    )
    assert (
        target_optimizer.state_dict()["param_groups"]
        == optimizer_before["param_groups"]
    )


def test_an_optimizer_tensor_of_the_wrong_shape_is_refused_before_loading(
    tmp_path, make_tiny_model
):
    model, optimizer = trained_pair(make_tiny_model)
    path = save_checkpoint(model, tmp_path / "run.safetensors", optimizer=optimizer)

    def shrink(tensors):
        tensors["optimizer/0/exp_avg"] = tensors["optimizer/0/exp_avg"][:1].clone()

    rewrite(path, change_tensors=shrink)
    target = make_tiny_model(seed=1)
    weights_before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(
        CheckpointError, match="optimizer tensor 'optimizer/0/exp_avg' has shape"
    ):
        load_checkpoint(path, target, make_optimizer(target, lr=1e-3))
    assert all(
        torch.equal(weights_before[k], v) for k, v in target.state_dict().items()
    )


def test_asking_for_optimizer_state_that_was_not_saved_changes_nothing(
    tmp_path, make_tiny_model
):
    path = save_checkpoint(make_tiny_model(), tmp_path / "model.safetensors")
    target = make_tiny_model(seed=1)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError, match="holds no optimizer state"):
        load_checkpoint(path, target, make_optimizer(target, lr=1e-3))
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_a_tensor_of_the_wrong_dtype_is_refused(tmp_path, make_tiny_model):
    path = save_checkpoint(make_tiny_model(), tmp_path / "model.safetensors")

    def to_half(tensors):
        tensors["final_norm.weight"] = tensors["final_norm.weight"].half()

    rewrite(path, change_tensors=to_half)
    with pytest.raises(CheckpointError, match="final_norm.weight is .* torch.float16"):
        load_checkpoint(path, make_tiny_model())


def test_a_configuration_too_big_for_the_file_is_refused_without_building_it(
    tmp_path, make_tiny_model, monkeypatch
):
    path = save_checkpoint(make_tiny_model(), tmp_path / "model.safetensors")

    def enlarge(metadata):
        config = json.loads(metadata["config"])
        # A model of about 2**22 * 2**20 * 4 bytes: 16 TB
        config.update(context_length=2**22, emb_dim=2**20)
        metadata["config"] = json.dumps(config)

    rewrite(path, change_metadata=enlarge)
    built_on = []
    real_model = checkpoint.GPTModel

    def recording_model(cfg):
        built_on.append(torch.get_default_device().type)
        return real_model(cfg)

    monkeypatch.setattr(checkpoint, "GPTModel", recording_model)
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_model(path)
    assert built_on == ["meta"]


@pytest.mark.parametrize(
    "config_text, message",
    [
        ("{not json", "not valid JSON"),
        ('"a string"', "must have exactly the fields"),
        ("[" * 100_000, "not valid JSON"),
    ],
)
def test_malformed_configuration_metadata_is_a_checkpoint_error(
    tmp_path, make_tiny_model, config_text, message
):
    path = save_checkpoint(make_tiny_model(), tmp_path / "model.safetensors")
    rewrite(path, change_metadata=lambda metadata: metadata.update(config=config_text))
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


FIELD_VALUES = st.one_of(
    st.integers(min_value=-3, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
)


@st.composite
def crafted_configs(draw, real: dict):
    """The real configuration with fields changed, removed or added."""
    config = dict(real)
    for name in draw(st.lists(st.sampled_from(sorted(real)), max_size=3)):
        config[name] = draw(FIELD_VALUES)
    for name in draw(st.lists(st.sampled_from(sorted(real)), max_size=1)):
        config.pop(name, None)
    extra = draw(st.dictionaries(st.text(max_size=8), FIELD_VALUES, max_size=1))
    return {**config, **extra}


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_any_crafted_configuration_loads_exactly_or_is_a_checkpoint_error(
    make_tiny_model, tiny_config, data
):
    real = json.loads(json.dumps(tiny_config.__dict__))
    crafted = data.draw(st.one_of(crafted_configs(real), st.text(max_size=20)))
    with tempfile.TemporaryDirectory() as folder:
        path = save_checkpoint(make_tiny_model(), Path(folder) / "model.safetensors")
        text = crafted if isinstance(crafted, str) else json.dumps(crafted)
        rewrite(path, change_metadata=lambda metadata: metadata.update(config=text))
        try:
            model = load_model(path)
        except CheckpointError:
            return
    # Only the real configuration may load, up to its dropout rate, which no
    # weight depends on; that rate must be a valid one
    assert model.cfg == tiny_config.replace(drop_rate=model.cfg.drop_rate)
    assert 0 <= model.cfg.drop_rate < 1
