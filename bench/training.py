"""Training throughput: our GPTModel and loop step vs Hugging Face's GPT2LMHeadModel."""

import torch
import torch.nn.functional as F

from bench.harness import Comparison
from llm.model import GPT2_CONFIGS, GPTModel
from llm.train import make_optimizer

BATCH, TOKENS = 2, 256


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


def comparisons() -> list[Comparison]:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2_CONFIGS["gpt2"].replace(context_length=TOKENS, drop_rate=0.0)
    torch.manual_seed(0)
    ours = GPTModel(cfg)
    hf_config = GPT2Config(
        n_positions=TOKENS,
        n_embd=768,
        n_layer=12,
        n_head=12,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=False,
    )
    theirs = GPT2LMHeadModel(hf_config)
    inputs = torch.randint(0, cfg.vocab_size, (BATCH, TOKENS))
    targets = torch.randint(0, cfg.vocab_size, (BATCH, TOKENS))
    return [
        Comparison(
            name="training: GPT-2 small step",
            description=(
                f"one AdamW step on {BATCH} x {TOKENS} tokens, fp32, same shape and "
                "untied head: our GPTModel vs transformers' GPT2LMHeadModel"
            ),
            ours=_training_step(lambda m, x: m(x), ours, inputs, targets),
            peer=_training_step(
                lambda m, x: m(input_ids=x).logits, theirs, inputs, targets
            ),
            target=1.1,
        )
    ]
