"""Serving several requests at once: batched generation against one at a time.

Both sides generate the same greedy tokens for the same 8 prompts of different
lengths: ours with `llm.batching.generate_batch` (all 8 in one batch, each row
with its own length), the peer with `llm.generate.generate` called once per
prompt, as a server without batching would. The ratio is the throughput gained
by batching. Decoding one token reads every weight of the model for a few
multiply-adds per weight, so it is bound by memory traffic; a batch of 8 reads
the weights once for 8 tokens.
"""

import torch

from bench.harness import Comparison
from bench.models import gpt2_small
from llm.batching import generate_batch
from llm.generate import generate
from llm.model import GPTModel
from llm.pretrain import BASE_MODEL_CONFIG

REQUESTS = 8
# The book's model is bound by memory traffic at a batch of 8 on a 2-core CPU;
# GPT-2 small, with 7 times the weights per token, is bound by arithmetic
# there already, so batching gains less
TARGETS = {"base model": 3.0, "GPT-2 small": 2.0}
# new tokens per request, per model shape: a few seconds per peer round
NEW_TOKENS = {"base model": 32, "GPT-2 small": 16}


def prompts(vocab_size: int) -> list[list[int]]:
    """8 seeded prompts of 4 to 18 tokens, short like chat messages, so that
    generating, not reading the prompts, takes most of the time."""
    generator = torch.Generator().manual_seed(0)
    lengths = [4 + 2 * i for i in range(REQUESTS)]
    return [
        torch.randint(0, vocab_size, (length,), generator=generator).tolist()
        for length in lengths
    ]


def model_of_shape(name: str) -> GPTModel:
    """A randomly initialised model of the named shape, in eval mode."""
    if name == "GPT-2 small":
        _, model = gpt2_small(context_length=128)
    else:
        torch.manual_seed(0)
        model = GPTModel(BASE_MODEL_CONFIG)
    return model.eval()


def batched(model: GPTModel, requests: list[list[int]], new_tokens: int):
    def run():
        return generate_batch(model, requests, new_tokens, max_batch=REQUESTS)

    return run


def one_at_a_time(model: GPTModel, requests: list[list[int]], new_tokens: int):
    def run():
        return [
            generate(model, torch.tensor([prompt]), new_tokens)[0, len(prompt) :]
            for prompt in requests
        ]

    return run


def comparisons():
    """One comparison per model shape, each building its model when reached."""
    for name, new_tokens in NEW_TOKENS.items():
        model = model_of_shape(name)
        requests = prompts(model.cfg.vocab_size)
        yield Comparison(
            name=f"serving: 8 requests, {name}",
            description=(
                f"{REQUESTS} greedy requests of {new_tokens} new tokens after "
                f"prompts of 4 to 18 tokens, fp32, {name} shape: one batch with "
                "a length per row (llm.batching.generate_batch) vs generate() "
                "for one request after another"
            ),
            ours=batched(model, requests, new_tokens),
            peer=one_at_a_time(model, requests, new_tokens),
            target=TARGETS[name],
            rounds=3 if name == "GPT-2 small" else None,
        )
        del model
