"""LoRA against full finetuning: training-step time and optimizer memory.

Both sides train the same spam-classifier-shaped model (GPT-2 small, or the book's
base model, with a 2-way output head) on the same batch, with AdamW through
`llm.train.make_optimizer`: ours with LoRA of rank 16 on every linear layer of the
blocks and the head trained in full (`llm.lora.add_lora`), the peer with every
weight trained. A step is forward, backward and optimizer step.
"""

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.harness import Comparison
from bench.models import gpt2_small
from llm.lora import add_lora
from llm.model import GPTModel
from llm.pretrain import BASE_MODEL_CONFIG
from llm.train import make_optimizer

RANK, ALPHA = 16, 32
# (batch, tokens) of each model's timed step: about a second for GPT-2 small
SHAPES = {"GPT-2 small": (2, 128), "base model": (8, 64)}


def classifier_pair(name: str) -> tuple[nn.Module, nn.Module]:
    """(LoRA model, fully trainable model) of the named shape, with the same
    weights and a 2-way head; the LoRA side trains A, B and the head."""
    if name == "GPT-2 small":
        _, full = gpt2_small(SHAPES[name][1])
    else:
        torch.manual_seed(0)
        full = GPTModel(BASE_MODEL_CONFIG)
    full.out_head = nn.Linear(full.cfg.emb_dim, 2)
    lora = copy.deepcopy(full)
    add_lora(lora, rank=RANK, alpha=ALPHA, trainable=("out_head",))
    return lora, full


def training_step(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor):
    """One AdamW step of the classification loss read at the last position;
    returns the step function and its optimizer."""
    optimizer = make_optimizer(model, lr=1e-4)

    def step():
        scores = model(inputs)[:, -1]
        loss = F.cross_entropy(scores, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, optimizer


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the tensors an optimizer keeps between steps (AdamW: two per
    trained weight, plus step counters)."""
    return sum(
        value.numel() * value.element_size()
        for state in optimizer.state.values()
        for value in state.values()
        if isinstance(value, torch.Tensor)
    )


def _batch(name: str, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    batch, tokens = SHAPES[name]
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, vocab_size, (batch, tokens), generator=generator)
    labels = torch.randint(0, 2, (batch,), generator=generator)
    return inputs, labels


def memory_bytes(name: str = "GPT-2 small") -> dict[str, int]:
    """Optimizer-state bytes after one step: {"ours": LoRA, "peer": full}."""
    lora, full = classifier_pair(name)
    inputs, labels = _batch(name, full.cfg.vocab_size)
    result = {}
    for side, model in [("ours", lora), ("peer", full)]:
        step, optimizer = training_step(model, inputs, labels)
        step()
        result[side] = optimizer_state_bytes(optimizer)
    return result


def comparisons():
    """One comparison per model shape, each building its models when reached."""
    for name, (batch, tokens) in SHAPES.items():
        lora, full = classifier_pair(name)
        inputs, labels = _batch(name, full.cfg.vocab_size)
        yield Comparison(
            name=f"lora: step vs full, {name}",
            description=(
                f"one AdamW training step of a {name} classifier on {batch} x "
                f"{tokens} tokens, fp32: LoRA rank {RANK} on every linear layer "
                "of the blocks plus the head vs training every weight"
            ),
            ours=training_step(lora, inputs, labels)[0],
            peer=training_step(full, inputs, labels)[0],
            target=1.2,
        )
        del lora, full
