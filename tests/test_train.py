"""llm.train: losses, evaluation, the optimiser, the schedule and the training loop."""

import math

import pytest
import torch
import torch.nn.functional as F

from llm.data import SlidingWindowDataset
from llm.model import GPTConfig, GPTModel
from llm.train import (
    TrainLog,
    batch_loss,
    batch_rows,
    cosine_schedule,
    evaluate,
    make_optimizer,
    text_to_token_ids,
    token_ids_to_text,
    train,
)
from llm.tokenizer import gpt2_tokenizer

TINY = GPTConfig(vocab_size=60, context_length=8, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.1)


def tiny(seed=0):
    torch.manual_seed(seed)
    model = GPTModel(TINY)
    return model, make_optimizer(model, lr=3e-3)


def data(n=400, seed=1):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 60, (n,), generator=generator)
    return SlidingWindowDataset(tokens, context_length=8, stride=8)


QUIET = dict(batch_size=4, eval_every=5, eval_batches=2, seed=3, on_eval=None)


def test_text_token_id_helpers_round_trip(mirror):
    tokenizer = gpt2_tokenizer()
    ids = text_to_token_ids("Every effort moves you<|endoftext|>", tokenizer)
    assert ids.tolist() == [[6109, 3626, 6100, 345, 50256]]
    assert token_ids_to_text(ids, tokenizer) == "Every effort moves you<|endoftext|>"


def test_batch_loss_is_the_mean_negative_log_probability_of_the_targets():
    model, _ = tiny()
    model.eval()
    inputs, targets = torch.randint(0, 60, (2, 5)), torch.randint(0, 60, (2, 5))
    log_probs = torch.log_softmax(model(inputs), dim=-1)
    by_hand = -log_probs.gather(-1, targets.unsqueeze(-1)).mean()
    assert torch.allclose(batch_loss(model, inputs, targets), by_hand, atol=1e-6)


def test_cross_entropy_of_a_uniform_prediction_is_ln_vocab_size():
    logits, targets = torch.zeros(10, 60), torch.arange(10)
    assert math.isclose(F.cross_entropy(logits, targets).item(), math.log(60), rel_tol=1e-6)


def test_evaluate_averages_batches_in_eval_mode_and_restores_the_mode():
    model, _ = tiny()
    model.train()
    dataset = data()
    loss = evaluate(model, dataset, batch_size=4, max_batches=3)
    assert model.training
    model.eval()
    expected = sum(
        batch_loss(model, dataset.inputs[i * 4 : i * 4 + 4], dataset.targets[i * 4 : i * 4 + 4]).item()
        for i in range(3)
    ) / 3
    assert math.isclose(loss, expected, rel_tol=1e-5)


def test_weight_decay_applies_to_matrices_only():
    model, optimizer = tiny()
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"]) and all(p.dim() < 2 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    schedule = cosine_schedule(warmup_steps=10, total_steps=110, min_ratio=0.1)
    assert schedule(0) == pytest.approx(0.1) and schedule(9) == pytest.approx(1.0)
    assert schedule(10) == pytest.approx(1.0) and schedule(60) == pytest.approx(0.55)
    assert schedule(110) == pytest.approx(0.1) and schedule(500) == pytest.approx(0.1)


def test_every_epoch_visits_every_window_once_in_a_new_order():
    first = torch.cat([batch_rows(step, 20, 4, seed=5) for step in range(5)])
    second = torch.cat([batch_rows(step, 20, 4, seed=5) for step in range(5, 10)])
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(20))
    assert not torch.equal(first, second)


def test_too_little_data_for_one_batch_is_a_clear_error():
    with pytest.raises(ValueError, match="3 windows are fewer than one batch of 4"):
        batch_rows(0, 3, 4, seed=0)


def test_training_lowers_the_loss_and_logs_every_evaluation():
    model, optimizer = tiny()
    repeated = SlidingWindowDataset(torch.arange(60).repeat(8), context_length=8, stride=8)
    log = train(model, optimizer, repeated, repeated, max_steps=60, **QUIET)
    assert log.step == 60 and log.steps == list(range(5, 61, 5))
    assert log.tokens_seen == 60 * 4 * 8 and log.tokens[-1] == log.tokens_seen
    assert log.train_losses[-1] < log.train_losses[0] - 1.0


def test_resuming_reproduces_the_uninterrupted_run_exactly():
    one_go = train(*tiny(), data(), data(seed=2), max_steps=20, **QUIET)
    model, optimizer = tiny()
    half = train(model, optimizer, data(), data(seed=2), max_steps=10, **QUIET)
    rest = train(model, optimizer, data(), data(seed=2), max_steps=20, log=half, **QUIET)
    assert rest.val_losses == one_go.val_losses and rest.train_losses == one_go.train_losses


def test_on_eval_receives_the_model_the_log_and_the_speed():
    calls = []
    model, optimizer = tiny()
    settings = {**QUIET, "on_eval": lambda m, log, speed: calls.append((m, log.step, speed))}
    train(model, optimizer, data(), data(), max_steps=7, **settings)
    assert [step for _, step, _ in calls] == [5, 7]  # every 5 steps and at the end
    assert calls[0][0] is model and calls[0][2] > 0


def test_gradient_clipping_and_schedule_are_applied():
    model, optimizer = tiny()
    train(model, optimizer, data(), data(), max_steps=4, lr_schedule=lambda step: 0.5,
          max_grad_norm=0.1, **QUIET)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1.5e-3)
    assert optimizer.param_groups[0]["initial_lr"] == pytest.approx(3e-3)


def test_train_log_defaults_are_empty():
    assert TrainLog() == TrainLog(0, 0, [], [], [], [])


def test_bf16_autocast_training_runs_in_bf16_and_keeps_fp32_weights():
    model, optimizer = tiny()
    repeated = SlidingWindowDataset(torch.arange(60).repeat(8), context_length=8, stride=8)
    seen = []
    hook = model.out_head.register_forward_hook(
        lambda module, inputs, output: seen.append(output.dtype) if module.training else None
    )
    log = train(model, optimizer, repeated, repeated, max_steps=60, precision="bf16", **QUIET)
    hook.remove()
    assert set(seen) == {torch.bfloat16}  # the training forward passes ran in bf16
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert log.train_losses[-1] < log.train_losses[0] - 1.0  # and it still learns


def test_compiled_training_matches_eager_training_without_dropout():
    # (compiled dropout draws its own random numbers, so dropout is off here)
    def no_dropout():
        torch.manual_seed(0)
        model = GPTModel(TINY.replace(drop_rate=0.0))
        return model, make_optimizer(model, lr=3e-3)

    eager = train(*no_dropout(), data(), data(seed=2), max_steps=5, **QUIET)
    compiled = train(*no_dropout(), data(), data(seed=2), max_steps=5, compile_model=True,
                     **QUIET)
    assert compiled.val_losses == pytest.approx(eager.val_losses, abs=1e-4)


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(ValueError, match=r"precision must be one of \('fp32', 'bf16'\)"):
        train(*tiny(), data(), data(), max_steps=1, precision="fp16", **QUIET)
