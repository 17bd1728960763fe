"""llm.distributed: DDP with torchrun takes the same steps as one process.

Two real torchrun runs on a tiny model (two CPU processes, then one) train for
a few steps with the same global batch. They cannot agree exactly: the single
process sums each gradient over all rows in one order, the ranks over their
halves and then across ranks, and float32 addition is not associative. We
accept 1e-4 relative on the losses (measured: about 1e-7), and 1e-4 absolute on
the weights, a twentieth of one AdamW step at the learning rate of 2e-3.
"""

import json

import numpy as np
import pytest
import torch

from llm.checkpoint import load_model
from llm.distributed import (
    LaunchError,
    RankShare,
    StepRecorder,
    init_distributed,
    load_token_ids,
    main,
    run_locally,
)
from llm.model import GPTConfig, GPTModel
from llm.train import batch_loss, evaluate

STEPS = 6
TINY = (
    f"--device cpu --steps {STEPS} --global-batch 8 --context-length 16 "
    "--emb-dim 32 --layers 2 --heads 2 --vocab-size 97 --eval-batches 2"
).split()


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    """An .npz of token ids below 97 with some structure to learn: a repeated
    pattern with random tokens mixed in."""
    generator = np.random.default_rng(0)
    pattern = np.tile(np.arange(97), 60)
    noise = generator.integers(0, 97, size=pattern.size)
    ids = np.where(generator.random(pattern.size) < 0.3, noise, pattern)
    path = tmp_path_factory.mktemp("data") / "tokens.npz"
    np.savez(path, train=ids[:5000], validation=ids[5000:])
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, token_file):
    """The folders of a two-process and a one-process run of the same training."""
    folders = {}
    for processes in (2, 1):
        out = tmp_path_factory.mktemp(f"run{processes}")
        run_locally(processes, *TINY, "--data", str(token_file), "--out", str(out))
        folders[processes] = out
    return folders


def report(folder) -> dict:
    return json.loads((folder / "run.json").read_text())


def test_two_processes_take_the_same_steps_as_one_with_the_same_global_batch(runs):
    two, one = report(runs[2]), report(runs[1])
    assert (two["world_size"], two["rank_batch"], two["backend"]) == (2, 4, "gloo")
    assert (one["world_size"], one["rank_batch"]) == (1, 8)
    # each rank trained on different rows ...
    rank0, rank1 = (torch.tensor(losses) for losses in two["rank_losses"])
    assert (rank0 - rank1).abs().max() > 1e-3
    # ... and their mean is the loss of the whole batch, step after step
    mean, single = torch.tensor(two["step_losses"]), torch.tensor(one["step_losses"])
    assert len(mean) == len(single) == STEPS
    torch.testing.assert_close(mean, (rank0 + rank1) / 2)
    torch.testing.assert_close(mean, single, rtol=1e-4, atol=0)
    assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-4)
    assert two["tokens_per_second"] > 0 and one["tokens_per_second"] > 0


def test_the_checkpoint_of_rank_zero_loads_and_equals_the_single_process_weights(
    runs,
):
    two = load_model(runs[2] / "model.safetensors")
    one = load_model(runs[1] / "model.safetensors")
    assert two.cfg == one.cfg and two.cfg.vocab_size == 97
    for (name, mine), theirs in zip(
        two.state_dict().items(), one.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-4, msg=name)
    # and the weights really moved away from the shared initial ones
    torch.manual_seed(123)
    start = GPTModel(two.cfg)
    start.init_gpt2_weights()
    assert not torch.allclose(start.out_head.weight, two.out_head.weight, atol=1e-4)


def test_a_global_batch_that_does_not_split_over_the_processes_is_refused(
    tmp_path, token_file
):
    options = [*TINY, "--global-batch", "3", "--data", str(token_file)]
    with pytest.raises(LaunchError, match="--global-batch 3 is not a multiple of"):
        run_locally(2, *options, "--out", str(tmp_path))
    assert not (tmp_path / "model.safetensors").exists()


@pytest.mark.parametrize(
    "options, message",
    [
        (["--steps", "0"], "--steps: must be at least 1"),
        (["--layers", "two"], "--layers: must be a whole number, got 'two'"),
        (["--lr", "fast"], "--lr: must be a number, got 'fast'"),
        (["--lr", "-1"], "--lr: must be a positive number"),
        (["--device", "tpu"], "invalid choice: 'tpu'"),
        (["--emb-dim", "30", "--heads", "4"], "must be divisible by n_heads"),
        (["--seed", "-1"], "seed must be an integer >= 0"),
    ],
)
def test_bad_options_end_the_program_with_a_message_naming_them(
    options, message, tmp_path, capsys
):
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path), *options])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("name", ["train", "validation"])
def test_data_files_need_one_dimensional_integer_token_ids(tmp_path, name):
    arrays = {"train": np.arange(100), "validation": np.arange(100)}
    arrays[name] = arrays[name].astype(np.float32)
    path = tmp_path / "tokens.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=f"'{name}' must be a 1-D array of integer"):
        load_token_ids(path)


@pytest.fixture
def as_if_started_by_torchrun(monkeypatch):
    """The environment torchrun gives the only process of a one-process run
    (no process group is formed: the options are checked before)."""
    variables = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}
    variables |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize(
    "data, vocab_size, message",
    [
        ("tokens", "50", "token id 96, too large for --vocab-size 50"),
        ("missing", "97", "missing.npz: not an .npz file with arrays 'train'"),
    ],
)
def test_data_that_does_not_fit_is_refused_before_training(
    data, vocab_size, message, tmp_path, token_file, as_if_started_by_torchrun, capsys
):
    path = token_file if data == "tokens" else tmp_path / "missing.npz"
    options = ["--data", str(path), "--vocab-size", vocab_size]
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), *options])
    assert message in capsys.readouterr().err


def test_without_torchrun_the_program_says_how_to_start_it(
    tmp_path, monkeypatch, capsys
):
    for name in ["RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"]:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path)])
    error = capsys.readouterr().err
    assert "not started by torchrun" in error and "--nproc-per-node" in error
    with pytest.raises(LaunchError, match="not started by torchrun"):
        init_distributed("cpu")
    with pytest.raises(ValueError, match="device must be one of"):
        init_distributed("tpu")


def test_rank_shares_are_equal_contiguous_parts_of_the_global_batch():
    items = [(torch.full((3,), i), torch.full((3,), -i)) for i in range(6)]
    shares = [RankShare(rank, 3)(items) for rank in range(3)]
    assert [inputs[:, 0].tolist() for inputs, _ in shares] == [[0, 1], [2, 3], [4, 5]]
    assert torch.equal(shares[1][1], -shares[1][0])
    inputs, targets = RankShare(0, 1)(items)
    assert inputs.shape == targets.shape == (6, 3)


def test_a_batch_that_does_not_split_equally_is_refused():
    items = [(torch.zeros(2),)] * 5
    with pytest.raises(ValueError, match="5 items cannot be shared equally by 2"):
        RankShare(1, 2)(items)


@pytest.mark.parametrize(
    "rank, world_size, error",
    [(2, 2, ValueError), (-1, 2, ValueError), (0, 0, ValueError), (0, 2.0, TypeError)],
)
def test_a_rank_share_needs_a_rank_within_the_world(rank, world_size, error):
    with pytest.raises(error):
        RankShare(rank, world_size)


def test_the_step_recorder_records_training_steps_but_not_evaluations():
    torch.manual_seed(0)
    cfg = GPTConfig(
        vocab_size=20, context_length=8, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0
    )
    model = GPTModel(cfg)
    inputs, targets = torch.randint(0, 20, (2, 2, 8))
    recorder = StepRecorder()
    loss = recorder(model, inputs, targets)
    loss.backward()
    assert len(recorder.losses) == 1 and torch.equal(recorder.losses[0], loss)
    assert not recorder.losses[0].requires_grad
    assert len(recorder.start_times) == 1
    data = [(inputs[0], targets[0]), (inputs[1], targets[1])]
    measured = evaluate(model, data, batch_size=2, loss_fn=recorder)
    assert measured == pytest.approx(batch_loss(model, inputs, targets).item())
    assert len(recorder.losses) == len(recorder.start_times) == 1


def test_run_locally_needs_a_positive_number_of_processes():
    with pytest.raises(ValueError, match="at least 1"):
        run_locally(0, "--out", "x")
    with pytest.raises(TypeError):
        run_locally("2", "--out", "x")
