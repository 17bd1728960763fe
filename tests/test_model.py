"""llm.model: configuration, the GPT model, its input checks and its cache argument."""

import dataclasses

import pytest
import torch

from llm.kv_cache import KVCache
from llm.model import GPT2_CONFIGS, GPTConfig, GPTModel, flops_per_token


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_gpt2_small_has_163m_parameters_and_124m_with_tied_weights():
    with torch.device("meta"):
        model = GPTModel(GPT2_CONFIGS["gpt2"])
    assert count(model) == 163_009_536
    assert count(model) - model.out_head.weight.numel() == 124_412_160


@pytest.mark.parametrize(
    "name, tied",
    [
        ("gpt2-medium", 354_749_440),
        ("gpt2-large", 773_891_840),
        ("gpt2-xl", 1_557_380_800),
    ],
)
def test_larger_gpt2_sizes_have_their_published_tied_parameter_counts(name, tied):
    with torch.device("meta"):
        model = GPTModel(GPT2_CONFIGS[name])
    assert count(model) - model.out_head.weight.numel() == tied


def test_qkv_bias_adds_three_bias_vectors_per_block(make_tiny_model, tiny_config):
    added = count(make_tiny_model(qkv_bias=True)) - count(make_tiny_model())
    assert added == tiny_config.n_layers * 3 * tiny_config.emb_dim


def test_logits_have_one_score_per_vocabulary_entry_for_every_position(
    make_tiny_model,
):
    logits = make_tiny_model()(torch.randint(0, 64, (3, 5)))
    assert logits.shape == (3, 5, 64)


def test_the_model_keeps_no_buffers_that_grow_with_the_context(make_tiny_model):
    model = make_tiny_model(context_length=2048)
    assert sum(buffer.numel() for buffer in model.buffers()) == 0


def test_an_input_longer_than_the_context_is_a_clear_error(make_tiny_model):
    with pytest.raises(
        ValueError,
        match="the input has 17 tokens, but the model's context_length is 16",
    ):
        make_tiny_model()(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize(
    "token_ids, message",
    [
        (torch.zeros(1, 0, dtype=torch.long), "the prompt is empty"),
        (torch.zeros(0, 5, dtype=torch.long), "the batch is empty"),
        (
            torch.tensor([[1, 64, 2]]),
            r"token id 64 is outside the vocabulary.*\[0, 64\)",
        ),
        (torch.tensor([[1, -1, 2]]), r"token id -1 is outside the vocabulary"),
        (torch.tensor([[1.0, 2.0]]), "token ids must be integers"),
        (torch.tensor([1, 2, 3]), r"token_ids must be a \(batch, tokens\) tensor"),
    ],
)
def test_bad_token_ids_are_clear_errors(make_tiny_model, token_ids, message):
    with pytest.raises(ValueError, match=message):
        make_tiny_model()(token_ids)


def test_eval_mode_is_deterministic_and_train_mode_uses_dropout(make_tiny_model):
    model = make_tiny_model(drop_rate=0.5)
    x = torch.randint(0, 64, (2, 8))
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_both_attention_implementations_give_the_same_logits(
    make_tiny_model, tiny_config
):
    x = torch.randint(0, 64, (2, 16))
    explicit = make_tiny_model(seed=1)
    sdpa = make_tiny_model(seed=1)
    for block in explicit.blocks:
        block.att.implementation = "explicit"
    assert torch.allclose(explicit(x), sdpa(x), atol=1e-5)
    built = GPTModel(tiny_config, attention="explicit")
    assert built.blocks[0].att.implementation == "explicit"


def test_the_model_is_causal_over_tokens(make_tiny_model):
    model = make_tiny_model()
    x = torch.randint(0, 64, (1, 8))
    changed = x.clone()
    changed[0, 5:] = (x[0, 5:] + 1) % 64
    assert torch.allclose(model(x)[:, :5], model(changed)[:, :5], atol=1e-6)


@pytest.mark.parametrize("implementation", ["sdpa", "explicit"])
def test_tokens_fed_through_a_cache_get_the_logits_of_the_whole_text(
    make_tiny_model, implementation
):
    model = make_tiny_model(drop_rate=0.3)
    for block in model.blocks:
        block.att.implementation = implementation
    ids = torch.randint(0, 64, (2, 14), generator=torch.Generator().manual_seed(2))
    cache = KVCache(model, batch_size=2)
    with torch.no_grad():
        pieces = [model(ids[:, :6], cache=cache), model(ids[:, 6:7], cache=cache)]
        pieces.append(model(ids[:, 7:], cache=cache))
        expected = model(ids)
    assert cache.length == 14
    torch.testing.assert_close(torch.cat(pieces, dim=1), expected, rtol=1e-4, atol=1e-5)


def test_cached_and_new_tokens_together_may_not_exceed_the_context(make_tiny_model):
    model = make_tiny_model()
    cache = KVCache(model, batch_size=1)
    with torch.no_grad():
        model(torch.zeros(1, 12, dtype=torch.long), cache=cache)
        with pytest.raises(
            ValueError, match="the input has 5 tokens after 12 cached positions"
        ):
            model(torch.zeros(1, 5, dtype=torch.long), cache=cache)
    assert cache.length == 12


def test_the_default_initialisation_is_pytorchs(make_tiny_model):
    model = make_tiny_model()
    # nn.Embedding draws from N(0, 1), nn.Linear from a uniform distribution
    assert abs(model.tok_emb.weight.std().item() - 1.0) < 0.1
    assert torch.count_nonzero(model.blocks[0].ff.up.bias) > 0


def test_init_gpt2_weights_follows_gpt2():
    model = GPTModel(GPT2_CONFIGS["gpt2"].replace(n_layers=2, vocab_size=1000))
    model.init_gpt2_weights()
    assert abs(model.tok_emb.weight.std().item() - 0.02) < 0.001
    # the shortcut projections: 0.02 / sqrt(2 * n_layers)
    assert abs(model.blocks[0].att.out_proj.weight.std().item() - 0.01) < 0.001
    assert torch.count_nonzero(model.blocks[0].ff.up.bias) == 0
    assert torch.all(model.final_norm.weight == 1)


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"emb_dim": 768, "n_heads": 10},
            r"emb_dim \(768\) must be divisible by n_heads \(10\)",
        ),
        ({"n_layers": 0}, "n_layers must be a positive integer, got 0"),
        ({"vocab_size": 50.5}, "vocab_size must be a positive integer, got 50.5"),
        (
            {"context_length": True},
            "context_length must be a positive integer, got True",
        ),
        ({"drop_rate": 1.0}, r"drop_rate must be in \[0, 1\), got 1.0"),
        ({"qkv_bias": "yes"}, "qkv_bias must be True or False, got 'yes'"),
    ],
)
def test_a_bad_configuration_is_a_clear_error(changes, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**changes)
    with pytest.raises(ValueError, match=message):
        GPTConfig().replace(**changes)


def test_configs_are_immutable_values():
    assert GPTConfig() == GPT2_CONFIGS["gpt2"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        GPTConfig().emb_dim = 10


def test_flops_per_token_counts_matmuls_and_attention():
    cfg = GPT2_CONFIGS["gpt2"]
    matmul_parameters = 12 * 12 * 768**2 + 768 * 50257
    assert flops_per_token(cfg, tokens=0) == 2 * matmul_parameters
    assert flops_per_token(cfg) == 2 * matmul_parameters + 4 * 12 * 1024 * 768
    three_times = 3 * flops_per_token(cfg, tokens=256)
    assert flops_per_token(cfg, tokens=256, training=True) == three_times


def test_features_are_the_forward_pass_without_the_head(make_tiny_model):
    model = make_tiny_model()
    token_ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(
            model.out_head(model.features(token_ids)), model(token_ids)
        )
