"""Generation with GPT-2 small's shape: the KV cache against no cache and against
transformers' `generate`, bf16 weights against fp32, decoding against the
read-bandwidth floor (reading its weights once per step), and the row-split
matrix-vector product against one library call per layer.
"""

import contextlib
import copy

import torch

from bench.harness import Comparison
from bench.models import gpt2_small, hf_gpt2_small, matrix_weight_bytes
from llm.generate import generate
from llm.kv_cache import KVCache, row_split_matvec

PROMPT, NEW_TOKENS = 20, 200
# decode steps per timed call for the bandwidth and row-split comparisons
DECODE_STEPS = 50


def _decode_steps(model, prompt: torch.Tensor, row_split: bool = True):
    """`DECODE_STEPS` single-token steps after a prefill of `prompt`, done once:
    each call truncates the cache to the prompt, so only decode steps are timed.
    `row_split` switches the model's linear layers to the row-split product, as
    `generate` does."""
    cache = KVCache(model, 1, PROMPT + DECODE_STEPS)
    with torch.no_grad():
        model(prompt, cache=cache)
    next_id = prompt[:, -1:]
    switch = row_split_matvec if row_split else contextlib.nullcontext

    @torch.no_grad()
    def steps():
        cache.truncate(PROMPT)
        with switch(model):
            for _ in range(DECODE_STEPS):
                model(next_id, cache=cache)

    return steps


def _reads(n_bytes: int, times: int):
    """Read a buffer of `n_bytes` `times` times, by summing it, as
    `bench.hardware` measures the read bandwidth. A decode step only reads its
    weights, so reading as many bytes, at the read bandwidth, is its floor: this
    takes n_bytes * times / bandwidth. (A copy would be the wrong floor: it reads
    each byte and also writes it, so the memory moves twice as many.)"""
    source = torch.ones(n_bytes // 4)

    def read_all():
        for _ in range(times):
            source.sum()

    return read_all


def comparisons() -> list[Comparison]:
    cfg, model = gpt2_small(1024)
    model.eval()
    bf16_model = copy.deepcopy(model).to(torch.bfloat16)
    hf_model = hf_gpt2_small(1024).eval()
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, cfg.vocab_size, (1, PROMPT), generator=generator)
    weight_bytes = matrix_weight_bytes(model)

    def hf_generate():
        hf_model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=NEW_TOKENS,
            # never stop early
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
            use_cache=True,
            pad_token_id=0,
        )

    shape = f"GPT-2 small shape, {PROMPT}-token prompt, {NEW_TOKENS} new tokens, greedy"
    return [
        Comparison(
            name="generation: KV cache vs none",
            description=f"{shape}: generate with vs without its cache (fp32)",
            ours=lambda: generate(model, prompt, NEW_TOKENS),
            peer=lambda: generate(model, prompt, NEW_TOKENS, use_cache=False),
            target=6.0,
        ),
        Comparison(
            name="generation: vs transformers",
            description=(
                f"{shape}: generate vs GPT2LMHeadModel.generate, both with their "
                "caches (fp32, untied head)"
            ),
            ours=lambda: generate(model, prompt, NEW_TOKENS),
            peer=torch.no_grad()(hf_generate),
            target=1.0,
        ),
        Comparison(
            name="decoding: bf16 vs fp32 weights",
            description=f"{shape}: generate with bf16 weights vs fp32 weights",
            ours=lambda: generate(bf16_model, prompt, NEW_TOKENS),
            peer=lambda: generate(model, prompt, NEW_TOKENS),
            target=2.0,
        ),
        Comparison(
            name="decoding: bandwidth floor",
            description=(
                f"{DECODE_STEPS} fp32 decode steps after a {PROMPT}-token prefill vs "
                f"reading (summing) the {weight_bytes / 1e6:.0f} MB of matrix weights "
                f"{DECODE_STEPS} times; the ratio is the fraction of the read "
                "bandwidth floor's speed that decoding reaches"
            ),
            ours=_decode_steps(model, prompt),
            peer=_reads(weight_bytes, DECODE_STEPS),
            # Below 1: a floor cannot be beaten, and a decode step does more than
            # stream its weights (many small kernels besides the matrix-vector
            # products), so it reaches only part of the floor's speed; measured
            # 0.5-0.75 as this machine's memory bandwidth drifts between runs.
            target=0.4,
        ),
        Comparison(
            name="decoding: row split vs one call",
            description=(
                f"{DECODE_STEPS} fp32 decode steps after a {PROMPT}-token prefill: "
                "linear layers split into one row block per thread "
                "(llm.kv_cache.row_split_matvec) vs one matrix-vector call each"
            ),
            ours=_decode_steps(model, prompt),
            peer=_decode_steps(model, prompt, row_split=False),
            target=1.5,
        ),
    ]
