"""The GPT-2 small models that several comparisons share: ours and transformers'."""

import torch

from llm.model import GPT2_CONFIGS, GPTConfig, GPTModel


def gpt2_small(context_length: int, seed: int = 0) -> tuple[GPTConfig, GPTModel]:
    """Our GPT-2 small (untied output head, no dropout) with GPT-2's initialisation."""
    cfg = GPT2_CONFIGS["gpt2"].replace(context_length=context_length, drop_rate=0.0)
    torch.manual_seed(seed)
    model = GPTModel(cfg)
    model.init_gpt2_weights()
    return cfg, model


def hf_gpt2_small(context_length: int):
    """transformers' GPT2LMHeadModel of the same shape: untied head, no dropout."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        n_positions=context_length,
        n_embd=768,
        n_layer=12,
        n_head=12,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=False,
    )
    return GPT2LMHeadModel(config)


def matrix_weight_bytes(model: GPTModel) -> int:
    """Bytes of the weights a decode step reads in full: everything except the
    embedding tables, of which it reads one row each."""
    skipped = {"tok_emb.weight", "pos_emb.weight"}
    return sum(
        p.numel() * p.element_size()
        for name, p in model.named_parameters()
        if name not in skipped
    )
