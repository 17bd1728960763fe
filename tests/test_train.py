"""llm.train: losses, evaluation, batches, the settings and the training loop."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from llm.data import SlidingWindowDataset
from llm.tokenizer import gpt2_tokenizer
from llm.train import (
    TrainLog,
    TrainSettings,
    batch_loss,
    batch_rows,
    cosine_schedule,
    evaluate,
    get_batch,
    make_optimizer,
    text_to_token_ids,
    token_ids_to_text,
    train,
)

QUIET = TrainSettings(
    max_steps=20, batch_size=4, eval_every=5, eval_batches=2, lr=3e-3, seed=3
)


def windows(n=400, seed=1, context_length=16):
    """Random token ids of the tiny vocabulary, cut into windows."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 64, (n,), generator=generator)
    return SlidingWindowDataset(tokens, context_length, stride=context_length)


def repeated_text():
    """The same 64 tokens over and over: easy to learn."""
    return SlidingWindowDataset(torch.arange(64).repeat(8), 16, stride=16)


def test_text_token_id_helpers_round_trip(mirror):
    tokenizer = gpt2_tokenizer()
    ids = text_to_token_ids("Every effort moves you<|endoftext|>", tokenizer)
    assert ids.tolist() == [[6109, 3626, 6100, 345, 50256]]
    assert token_ids_to_text(ids, tokenizer) == "Every effort moves you<|endoftext|>"


def test_batch_loss_is_the_mean_negative_log_probability_of_the_targets(
    make_tiny_model,
):
    model = make_tiny_model()
    inputs, targets = torch.randint(0, 64, (2, 5)), torch.randint(0, 64, (2, 5))
    log_probs = torch.log_softmax(model(inputs), dim=-1)
    by_hand = -log_probs.gather(-1, targets.unsqueeze(-1)).mean()
    assert torch.allclose(batch_loss(model, inputs, targets), by_hand, atol=1e-6)


def test_batch_loss_skips_targets_of_minus_100(make_tiny_model):
    model = make_tiny_model()
    inputs, targets = torch.randint(0, 64, (1, 6)), torch.randint(0, 64, (1, 6))
    masked = targets.clone()
    masked[:, :3] = -100
    log_probs = torch.log_softmax(model(inputs), dim=-1)
    kept = -log_probs[:, 3:].gather(-1, targets[:, 3:].unsqueeze(-1)).mean()
    assert torch.allclose(batch_loss(model, inputs, masked), kept, atol=1e-6)


def test_cross_entropy_of_a_uniform_prediction_is_ln_vocab_size():
    logits, targets = torch.zeros(10, 60), torch.arange(10)
    loss = F.cross_entropy(logits, targets).item()
    assert math.isclose(loss, math.log(60), rel_tol=1e-6)


def test_evaluate_averages_batches_in_eval_mode_and_restores_the_mode(
    make_tiny_model,
):
    model = make_tiny_model(drop_rate=0.5).train()
    dataset = windows()
    loss = evaluate(model, dataset, batch_size=4, max_batches=3)
    assert model.training
    model.eval()
    expected = (
        sum(
            batch_loss(model, *get_batch(dataset, slice(i * 4, i * 4 + 4))).item()
            for i in range(3)
        )
        / 3
    )
    assert math.isclose(loss, expected, rel_tol=1e-5)


@pytest.mark.parametrize("max_batches", [0, -1, 1.5])
def test_evaluate_refuses_a_batch_count_below_one(make_tiny_model, max_batches):
    with pytest.raises(ValueError, match="max_batches must be an integer >= 1"):
        evaluate(make_tiny_model(), windows(), batch_size=4, max_batches=max_batches)


def test_a_sliding_window_batch_is_a_slice_of_its_windows():
    dataset = windows()
    inputs, targets = get_batch(dataset, torch.tensor([3, 1]))
    assert torch.equal(inputs, dataset.inputs[[3, 1]])
    assert torch.equal(targets, dataset.targets[[3, 1]])


def test_tuples_of_tensors_are_stacked_and_other_items_need_collate():
    pairs = TensorDataset(torch.arange(12).view(6, 2), torch.arange(6))
    features, labels = get_batch(pairs, slice(2, 5))
    assert features.tolist() == [[4, 5], [6, 7], [8, 9]] and labels.tolist() == [
        2,
        3,
        4,
    ]

    class Ragged(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, index):
            return torch.ones(index + 1, dtype=torch.long), torch.tensor(index)

    with pytest.raises(ValueError, match="pass collate= to pad them"):
        get_batch(Ragged(), slice(0, 2))

    def pad(items):
        longest = max(len(ids) for ids, _ in items)
        padded = [F.pad(ids, (0, longest - len(ids))) for ids, _ in items]
        return torch.stack(padded), torch.stack([label for _, label in items])

    ids, labels = get_batch(Ragged(), slice(1, 3), collate=pad)
    assert ids.tolist() == [[1, 1, 0], [1, 1, 1]] and labels.tolist() == [1, 2]


def test_weight_decay_applies_to_matrices_only(make_tiny_model):
    model = make_tiny_model()
    decayed, plain = make_optimizer(model, lr=1e-3).param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"])
    assert all(p.dim() < 2 for p in plain["params"])
    count = len(decayed["params"]) + len(plain["params"])
    assert count == len(list(model.parameters()))


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    schedule = cosine_schedule(warmup_steps=10, total_steps=110, min_ratio=0.1)
    assert schedule(0) == pytest.approx(0.1) and schedule(9) == pytest.approx(1.0)
    assert schedule(10) == pytest.approx(1.0) and schedule(60) == pytest.approx(0.55)
    assert schedule(110) == pytest.approx(0.1) and schedule(500) == pytest.approx(0.1)


def test_settings_give_the_learning_rate_of_each_step():
    constant = TrainSettings(max_steps=100, batch_size=1, eval_every=1, lr=0.5)
    assert [constant.lr_multiplier(step) for step in (0, 50, 99)] == [1.0] * 3
    warm = constant.replace(warmup_steps=4)
    assert [warm.lr_multiplier(step) for step in range(6)] == [
        0.25,
        0.5,
        0.75,
        1.0,
        1.0,
        1.0,
    ]
    cosine = warm.replace(schedule="cosine", min_lr_ratio=0.2)
    expected = cosine_schedule(4, 100, 0.2)
    assert all(cosine.lr_multiplier(s) == expected(s) for s in range(0, 120, 7))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"eval_every": 0}, "eval_every must be an integer >= 1, got 0"),
        ({"max_steps": 0}, "max_steps must be an integer >= 1"),
        ({"batch_size": 2.0}, "batch_size must be an integer >= 1"),
        ({"eval_batches": True}, "eval_batches must be an integer >= 1"),
        ({"warmup_steps": -1}, "warmup_steps must be an integer >= 0"),
        ({"seed": -5}, "seed must be an integer >= 0"),
        ({"lr": 0.0}, "lr must be a positive number"),
        ({"lr": float("nan")}, "lr must be a positive number"),
        ({"weight_decay": -0.1}, "weight_decay must be a number >= 0"),
        ({"min_lr_ratio": 1.5}, r"min_lr_ratio must be a number in \[0, 1\]"),
        ({"max_grad_norm": 0}, "max_grad_norm must be a positive number or None"),
        ({"schedule": "linear"}, r"schedule must be one of \('constant', 'cosine'\)"),
        ({"precision": "fp16"}, r"precision must be one of \('fp32', 'bf16'\)"),
        ({"compile_model": "yes"}, "compile_model must be True or False"),
    ],
)
def test_invalid_settings_are_refused_when_they_are_made(changes, message):
    with pytest.raises(ValueError, match=message):
        QUIET.replace(**changes)


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        QUIET.lr = 1.0


def test_every_epoch_visits_every_item_once_in_a_new_order():
    first = torch.cat([batch_rows(step, 20, 4, seed=5) for step in range(5)])
    second = torch.cat([batch_rows(step, 20, 4, seed=5) for step in range(5, 10)])
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(20))
    assert not torch.equal(first, second)


def test_too_little_data_for_one_batch_is_refused_before_any_training(
    make_tiny_model,
):
    model = make_tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    few = SlidingWindowDataset(torch.arange(40), 16, stride=16)
    with pytest.raises(ValueError, match="has 2 items, fewer than one batch of 4"):
        train(model, few, few, QUIET, on_eval=None)
    assert all(
        torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)
    )


def test_training_lowers_the_loss_and_logs_every_evaluation(make_tiny_model):
    settings = QUIET.replace(max_steps=60)
    log = train(
        make_tiny_model(), repeated_text(), repeated_text(), settings, on_eval=None
    )
    assert log.step == 60 and log.steps == list(range(5, 61, 5))
    assert log.tokens_seen == 60 * 4 * 16 and log.tokens[-1] == log.tokens_seen
    assert log.train_losses[-1] < log.train_losses[0] - 1.0


def test_training_leaves_the_callers_random_state_alone(make_tiny_model):
    model = make_tiny_model(drop_rate=0.1)
    torch.manual_seed(42)
    expected = torch.rand(3)
    torch.manual_seed(42)
    train(model, windows(), windows(seed=2), QUIET, on_eval=None)
    assert torch.equal(torch.rand(3), expected)


def test_the_same_settings_give_the_same_run_with_dropout(make_tiny_model):
    first = train(
        make_tiny_model(drop_rate=0.1), windows(), windows(seed=2), QUIET, on_eval=None
    )
    torch.manual_seed(999)
    second = train(
        make_tiny_model(drop_rate=0.1), windows(), windows(seed=2), QUIET, on_eval=None
    )
    assert first.val_losses == second.val_losses


def test_resuming_reproduces_the_uninterrupted_run_exactly(make_tiny_model):
    data, held_out = windows(), windows(seed=2)
    one_go = train(make_tiny_model(drop_rate=0.1), data, held_out, QUIET, on_eval=None)
    model = make_tiny_model(drop_rate=0.1)
    optimizer = make_optimizer(model, QUIET.lr)
    half = train(
        model,
        data,
        held_out,
        QUIET.replace(max_steps=10),
        optimizer=optimizer,
        on_eval=None,
    )
    # The log travels as plain data, as in a checkpoint
    log = TrainLog.from_dict(half.to_dict())
    torch.manual_seed(12345)
    rest = train(
        model, data, held_out, QUIET, optimizer=optimizer, log=log, on_eval=None
    )
    assert rest.val_losses == one_go.val_losses
    assert rest.train_losses == one_go.train_losses


def test_random_numbers_drawn_by_on_eval_do_not_change_the_run(make_tiny_model):
    data, held_out = windows(), windows(seed=2)
    quiet = train(make_tiny_model(drop_rate=0.1), data, held_out, QUIET, on_eval=None)
    noisy = train(
        make_tiny_model(drop_rate=0.1),
        data,
        held_out,
        QUIET,
        on_eval=lambda model, log, speed: torch.rand(100),
    )
    assert noisy.val_losses == quiet.val_losses


def test_on_eval_receives_the_model_the_log_and_the_speed(make_tiny_model):
    calls = []
    model = make_tiny_model()
    train(
        model,
        windows(),
        windows(),
        QUIET.replace(max_steps=7),
        on_eval=lambda m, log, speed: calls.append((m, log.step, speed)),
    )
    # Every 5 steps and after the last one
    assert [step for _, step, _ in calls] == [5, 7]
    assert calls[0][0] is model and calls[0][2] > 0


def test_the_learning_rate_follows_the_settings_and_clipping_runs(make_tiny_model):
    model = make_tiny_model()
    optimizer = make_optimizer(model, lr=1.0)
    settings = QUIET.replace(
        max_steps=4, schedule="cosine", warmup_steps=2, max_grad_norm=0.1
    )
    train(model, windows(), windows(), settings, optimizer=optimizer, on_eval=None)
    expected = settings.lr * settings.lr_multiplier(3)
    assert all(group["lr"] == expected for group in optimizer.param_groups)


def test_another_loss_and_collate_train_a_classifier(make_tiny_model):
    """The loop with a classification loss over padded variable-length items."""

    class Lengths(Dataset):
        """Token sequences of length 1 to 8, labelled by whether they hold token 7."""

        def __init__(self):
            generator = torch.Generator().manual_seed(0)
            self.items = []
            for index in range(64):
                ids = torch.randint(0, 7, (1 + index % 8,), generator=generator)
                if index % 2:
                    ids[index % len(ids)] = 7
                self.items.append((ids, torch.tensor(index % 2)))

        def __len__(self):
            return len(self.items)

        def __getitem__(self, index):
            return self.items[index]

    def pad(items):
        longest = max(len(ids) for ids, _ in items)
        padded = torch.stack([F.pad(ids, (0, longest - len(ids))) for ids, _ in items])
        mask = torch.stack([torch.arange(longest) < len(ids) for ids, _ in items])
        return padded, mask, torch.stack([label for _, label in items])

    def classification_loss(model, ids, mask, labels):
        # Mean over the real tokens of the first two logits as class scores
        logits = model(ids)[..., :2]
        pooled = (logits * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        return F.cross_entropy(pooled, labels)

    data = Lengths()
    settings = QUIET.replace(max_steps=60, batch_size=8, eval_every=20, eval_batches=8)
    model = make_tiny_model()
    untrained = evaluate(model, data, 8, loss_fn=classification_loss, collate=pad)
    log = train(
        model,
        data,
        data,
        settings,
        loss_fn=classification_loss,
        collate=pad,
        on_eval=None,
    )
    assert log.train_losses[-1] < untrained - 0.3


def test_train_log_round_trips_through_plain_data():
    log = TrainLog(
        step=3,
        tokens_seen=48,
        steps=[3],
        tokens=[48],
        train_losses=[2.5],
        val_losses=[2.75],
        rng_state={"cpu": [1, 2, 255]},
    )
    assert TrainLog.from_dict(log.to_dict()) == log
    assert TrainLog() == TrainLog(0, 0, [], [], [], [], {})


@pytest.mark.parametrize(
    "data",
    [
        {"step": 1, "epoch": 2},
        {"step": "3"},
        {"train_losses": ["low"]},
        {"rng_state": {"cpu": [256]}},
        ["step", 1],
    ],
)
def test_train_log_refuses_data_that_is_not_a_log(data):
    with pytest.raises(ValueError, match="not a training log"):
        TrainLog.from_dict(data)


def test_settings_must_be_a_train_settings(make_tiny_model):
    with pytest.raises(TypeError, match="settings must be a TrainSettings"):
        train(make_tiny_model(), windows(), windows(), {"max_steps": 1})


def test_bf16_autocast_training_runs_in_bf16_and_keeps_fp32_weights(make_tiny_model):
    model = make_tiny_model()
    seen = []
    hook = model.out_head.register_forward_hook(
        lambda module, inputs, output: (
            seen.append(output.dtype) if module.training else None
        )
    )
    settings = QUIET.replace(max_steps=60, precision="bf16")
    log = train(model, repeated_text(), repeated_text(), settings, on_eval=None)
    hook.remove()
    # The training forward passes ran in bf16
    assert set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    # And it still learns
    assert log.train_losses[-1] < log.train_losses[0] - 1.0


def test_compiled_training_matches_eager_training_without_dropout(make_tiny_model):
    # Compiled dropout draws its own random numbers, so dropout is off here
    settings = QUIET.replace(max_steps=5)
    eager = train(make_tiny_model(), windows(), windows(seed=2), settings, on_eval=None)
    compiled = train(
        make_tiny_model(),
        windows(),
        windows(seed=2),
        settings.replace(compile_model=True),
        on_eval=None,
    )
    assert compiled.val_losses == pytest.approx(eager.val_losses, abs=1e-4)
