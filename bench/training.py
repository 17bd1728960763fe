"""Training GPT-2 small on this machine: against transformers, against the
hardware's matrix-multiply rate, and with the faster options of `llm.train.train`.
"""

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from bench.hardware import MATMUL_SIZE
from bench.harness import Comparison
from bench.models import gpt2_small, hf_gpt2_small
from llm.data import SlidingWindowDataset
from llm.model import flops_per_token
from llm.train import TrainLog, TrainSettings, make_optimizer, train

BATCH, TOKENS = 2, 256
# Training steps per timed call of `train`
STEPS = 2


def _training_step(logits_of, model, inputs, targets):
    """One AdamW step; `logits_of(model, inputs)` adapts to each model's interface."""
    optimizer = make_optimizer(model, lr=1e-4)

    def step():
        logits = logits_of(model, inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _matmuls(flops: float):
    """fp32 square matrix products adding up to `flops`: the machine's best case."""
    a, b = torch.randn(2, MATMUL_SIZE, MATMUL_SIZE)
    count = max(1, round(flops / (2 * MATMUL_SIZE**3)))

    def multiply():
        for _ in range(count):
            torch.mm(a, b)

    return multiply


def _train_calls(data: SlidingWindowDataset, **options):
    """`STEPS` more steps of `llm.train.train` per call, continuing one run."""
    _, model = gpt2_small(TOKENS)
    optimizer = make_optimizer(model, lr=1e-4)
    log = TrainLog()
    # Only the final evaluation of each call, on one batch
    settings = TrainSettings(
        max_steps=STEPS,
        batch_size=BATCH,
        eval_every=10**9,
        eval_batches=1,
        lr=1e-4,
        **options,
    )

    def more_steps():
        train(
            model,
            data,
            data,
            settings.replace(max_steps=log.step + STEPS),
            optimizer=optimizer,
            log=log,
            on_eval=None,
        )

    return more_steps


def comparisons() -> Iterator[Comparison]:
    """The comparisons one at a time: each builds its models when it is reached,
    so that no more than two GPT-2 small models with optimizers exist at once."""
    cfg, ours = gpt2_small(TOKENS)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, cfg.vocab_size, (BATCH, TOKENS), generator=generator)
    targets = torch.randint(0, cfg.vocab_size, (BATCH, TOKENS), generator=generator)
    step_flops = flops_per_token(cfg, TOKENS, training=True) * BATCH * TOKENS
    our_step = _training_step(lambda m, x: m(x), ours, inputs, targets)
    yield Comparison(
        name="training: GPT-2 small step",
        description=(
            f"one AdamW step on {BATCH} x {TOKENS} tokens, fp32, same shape and "
            "untied head: our GPTModel vs transformers' GPT2LMHeadModel"
        ),
        ours=our_step,
        peer=_training_step(
            lambda m, x: m(input_ids=x).logits, hf_gpt2_small(TOKENS), inputs, targets
        ),
        target=1.1,
    )
    yield Comparison(
        name="training: FLOP utilisation",
        description=(
            f"the step above ({step_flops / 1e9:.0f} GFLOP: 6N plus attention per "
            f"token) vs fp32 {MATMUL_SIZE}x{MATMUL_SIZE} matrix products of the "
            "same FLOPs; the ratio is the fraction of the measured matmul rate"
        ),
        ours=our_step,
        peer=_matmuls(step_flops),
        target=0.65,
    )
    del ours, our_step

    tokens = torch.randint(
        0, cfg.vocab_size, (20 * BATCH * TOKENS,), generator=generator
    )
    data = SlidingWindowDataset(tokens, TOKENS, TOKENS)
    options = [
        (
            "bf16 + compile",
            dict(precision="bf16", compile_model=True),
            1.6,
            "precision='bf16', compile_model=True",
        ),
        ("bf16 autocast only", dict(precision="bf16"), 1.0, "precision='bf16' alone"),
        (
            "torch.compile only",
            dict(compile_model=True),
            1.0,
            "compile_model=True alone (fp32)",
        ),
    ]
    for name, settings, target, words in options:
        yield Comparison(
            name=f"training: {name}",
            description=(
                f"llm.train.train, {STEPS} steps of {BATCH} x {TOKENS} tokens and one "
                f"evaluation batch: {words} vs fp32 eager"
            ),
            ours=_train_calls(data, **settings),
            peer=_train_calls(data),
            target=target,
        )
