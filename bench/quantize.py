"""Int8 weight-only quantization: decoding speed against float32 and torchao,
and the change of the base model's validation loss.

All sides generate the same 32 greedy tokens after the same 16-token prompt
with the KV cache (`llm.generate.generate`, `use_cache=True`), one sequence,
on a model of GPT-2 small's shape with random weights: ours with every linear
layer in int8 (`llm.quantize.quantize_model`), float32 with chapter 5b's
row-split matrix-vector products, and torchao's `Int8WeightOnlyConfig` in
eager mode (whose linear layers keep their own forward, since the row split
cannot reshape torchao's int8 tensors).
"""

import copy
import logging

import torch
import torch.nn as nn

from bench.harness import Comparison
from bench.models import gpt2_small
from llm.generate import generate
from llm.quantize import quantize_model

PROMPT_TOKENS, NEW_TOKENS = 16, 32


def torchao_int8(model: nn.Module) -> nn.Module:
    """A copy of `model` with torchao's int8 weight-only quantization (its
    tensor-subclass weights are left alone by `row_split_matvec`)."""
    # torchao logs harmless notes about GPU kernels it cannot load on a CPU
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    quantized = copy.deepcopy(model)
    quantize_(quantized, Int8WeightOnlyConfig())
    return quantized


def _decode(model: nn.Module, prompt: torch.Tensor):
    def run():
        return generate(model, prompt, NEW_TOKENS, use_cache=True)

    return run


def comparisons():
    """Ours (int8) against float32, then against torchao's int8."""
    _, model = gpt2_small(context_length=PROMPT_TOKENS + NEW_TOKENS)
    model.eval()
    ours = quantize_model(copy.deepcopy(model))
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(
        0, model.cfg.vocab_size, (1, PROMPT_TOKENS), generator=generator
    )
    shape = f"GPT-2 small, {PROMPT_TOKENS}-token prompt + {NEW_TOKENS} greedy tokens"
    yield Comparison(
        name="quantize: int8 decode vs fp32",
        description=f"decoding with the KV cache, {shape}: int8 weights vs float32",
        ours=_decode(ours, prompt),
        peer=_decode(model, prompt),
        target=1.5,
    )
    yield Comparison(
        name="quantize: int8 decode vs torchao",
        description=(
            f"decoding with the KV cache, {shape}: our int8 weights vs torchao's "
            "Int8WeightOnlyConfig (eager)"
        ),
        ours=_decode(ours, prompt),
        peer=_decode(torchao_int8(model), prompt),
        target=1.0,
        rounds=3,
    )


def validation_loss_change(batches: int = 8) -> dict[str, float]:
    """The base model's validation loss in float32, with our int8 weights and
    with torchao's, on its first `batches` batches of 8 windows of 128 tokens;
    "change" and "torchao_change" are relative to float32 (0.01 is 1%)."""
    from llm.data import SlidingWindowDataset
    from llm.pretrain import base_model, gutenberg_token_ids
    from llm.train import evaluate

    model = base_model("cpu")
    _, val_ids = gutenberg_token_ids()
    context = model.cfg.context_length
    val_data = SlidingWindowDataset(val_ids, context, stride=context)
    losses = {
        name: evaluate(candidate, val_data, batch_size=8, max_batches=batches)
        for name, candidate in [
            ("float32", model),
            ("int8", quantize_model(copy.deepcopy(model))),
            ("torchao", torchao_int8(model)),
        ]
    }
    losses["change"] = losses["int8"] / losses["float32"] - 1
    losses["torchao_change"] = losses["torchao"] / losses["float32"] - 1
    return losses
