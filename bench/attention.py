"""Attention: PyTorch's fused scaled_dot_product_attention vs the explicit computation.

Both sides get the same queries, keys and values of GPT-2 small's shape (12 heads
of 64 dimensions, batch 2) and compute causal attention forward and backward; the
projections before and after, identical for both, are left out.
"""

import math

import torch
import torch.nn.functional as F

from bench.harness import Comparison

# least speed-up of the fused path, by sequence length
TARGETS = {256: 1.4, 1024: 3.5}


def explicit_attention(q, k, v):
    """Scores, causal mask, softmax, weighted sum: what the 'explicit' path computes."""
    tokens = q.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    future = torch.ones(tokens, tokens, dtype=torch.bool, device=q.device).triu(1)
    return torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1) @ v


def fused_attention(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


# passes per timed call, so that each takes ~0.2 s
REPEATS = {256: 20, 1024: 2}


def _forward_backward(attention, q, k, v, repeats: int):
    def steps():
        for _ in range(repeats):
            for tensor in (q, k, v):
                tensor.grad = None
            attention(q, k, v).sum().backward()

    return steps


def comparisons() -> list[Comparison]:
    result = []
    for tokens, target in TARGETS.items():
        generator = torch.Generator().manual_seed(0)
        q, k, v = (
            torch.randn(2, 12, tokens, 64, generator=generator).requires_grad_()
            for _ in range(3)
        )
        result.append(
            Comparison(
                name=f"attention: sdpa vs explicit, {tokens}",
                description=(
                    f"causal attention forward and backward, 2 x 12 heads x {tokens} "
                    "tokens x 64: the fused kernel vs scores, mask, softmax, matmul "
                    f"({REPEATS[tokens]} passes per timing)"
                ),
                ours=_forward_backward(fused_attention, q, k, v, REPEATS[tokens]),
                peer=_forward_backward(explicit_attention, q, k, v, REPEATS[tokens]),
                target=target,
            )
        )
    return result
