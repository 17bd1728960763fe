"""Generation with GPT-2 small's shape: the KV cache against no cache and against
transformers' `generate`, bf16 weights against fp32, and decoding against the
memory-bandwidth floor.
"""

import copy

import torch

from bench.harness import Comparison
from bench.models import gpt2_small, hf_gpt2_small, matrix_weight_bytes
from llm.generate import generate
from llm.kv_cache import KVCache, forward_cached, generate_cached

PROMPT, NEW_TOKENS = 20, 200
DECODE_STEPS = 50  # decode steps per timed call for the bandwidth comparison


def _decode_steps(model, prompt: torch.Tensor):
    """`DECODE_STEPS` single-token steps after a prefill of `prompt`, done once:
    each call rewinds the cache to the prompt, so only decode steps are timed."""
    cache = KVCache(model, 1, PROMPT + DECODE_STEPS)
    forward_cached(model, prompt, cache)
    next_id = prompt[:, -1:]

    def steps():
        cache.length = PROMPT  # later positions are overwritten
        for _ in range(DECODE_STEPS):
            forward_cached(model, next_id, cache)

    return steps


def _copies(n_bytes: int, times: int):
    """Copy a buffer of `n_bytes` `times` times. The copy bandwidth is bytes
    copied per second, so this takes n_bytes * times / bandwidth: the floor."""
    source = torch.ones(n_bytes // 4)
    target = torch.empty_like(source)

    def copy_all():
        for _ in range(times):
            target.copy_(source)

    return copy_all


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
            min_new_tokens=NEW_TOKENS,  # never stop early
            do_sample=False,
            use_cache=True,
            pad_token_id=0,
        )

    shape = f"GPT-2 small shape, {PROMPT}-token prompt, {NEW_TOKENS} new tokens, greedy"
    return [
        Comparison(
            name="generation: KV cache vs none",
            description=f"{shape}: generate_cached vs generate (fp32)",
            ours=lambda: generate_cached(model, prompt, NEW_TOKENS),
            peer=lambda: generate(model, prompt, NEW_TOKENS),
            target=6.0,
        ),
        Comparison(
            name="generation: vs transformers",
            description=(
                f"{shape}: generate_cached vs GPT2LMHeadModel.generate with its "
                "cache (fp32, untied head)"
            ),
            ours=lambda: generate_cached(model, prompt, NEW_TOKENS),
            peer=torch.no_grad()(hf_generate),
            target=1.0,
        ),
        Comparison(
            name="decoding: bf16 vs fp32 weights",
            description=f"{shape}: generate_cached with bf16 weights vs fp32 weights",
            ours=lambda: generate_cached(bf16_model, prompt, NEW_TOKENS),
            peer=lambda: generate_cached(model, prompt, NEW_TOKENS),
            target=2.0,
        ),
        Comparison(
            name="decoding: bandwidth floor",
            description=(
                f"{DECODE_STEPS} fp32 decode steps after a {PROMPT}-token prefill vs "
                f"copying the {weight_bytes / 1e6:.0f} MB of matrix weights "
                f"{DECODE_STEPS} times; the ratio is the fraction of the floor speed"
            ),
            ours=_decode_steps(model, prompt),
            peer=_copies(weight_bytes, DECODE_STEPS),
            target=0.8,
        ),
    ]
