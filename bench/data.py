"""Sliding windows over one million tokens: views into one tensor vs copied windows."""

import torch

from bench.harness import Comparison
from llm.data import SlidingWindowDataset

N_TOKENS, CONTEXT, STRIDE = 1_000_000, 256, 64


def copied_windows(token_ids: list[int], context_length: int, stride: int):
    """The common baseline: a Python loop that copies every window into its own
    tensor."""
    inputs, targets = [], []
    for start in range(0, len(token_ids) - context_length, stride):
        inputs.append(torch.tensor(token_ids[start : start + context_length]))
        targets.append(torch.tensor(token_ids[start + 1 : start + context_length + 1]))
    return inputs, targets


def comparisons() -> list[Comparison]:
    token_ids = torch.randint(
        0, 50257, (N_TOKENS,), generator=torch.Generator().manual_seed(0)
    )
    as_list = token_ids.tolist()
    return [
        Comparison(
            name="data: sliding windows, 1M tokens",
            description=(
                f"build input/target windows of {CONTEXT} tokens, stride {STRIDE}: "
                "SlidingWindowDataset (views) vs a list of copied tensors"
            ),
            ours=lambda: SlidingWindowDataset(token_ids, CONTEXT, STRIDE),
            peer=lambda: copied_windows(as_list, CONTEXT, STRIDE),
            target=10.0,
        )
    ]


def memory_bytes() -> dict[str, int]:
    """Bytes of token storage held by each side (ours is linear in the tokens)."""
    token_ids = torch.arange(N_TOKENS)
    ours = SlidingWindowDataset(token_ids, CONTEXT, STRIDE)
    inputs, targets = copied_windows(token_ids.tolist(), CONTEXT, STRIDE)
    return {
        "ours": ours.tokens.untyped_storage().nbytes(),
        "peer": sum(t.untyped_storage().nbytes() for t in inputs + targets),
    }
