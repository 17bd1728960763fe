"""llm.model and llm.generate: configuration, the GPT model, greedy generation."""

import pytest
import torch

from llm.generate import generate_greedy
from llm.model import GPT2_CONFIGS, GPTConfig, GPTModel, flops_per_token

TINY = GPTConfig(vocab_size=50, context_length=8, emb_dim=16, n_heads=4, n_layers=2, drop_rate=0.0)


def tiny_model(seed=0, **changes):
    torch.manual_seed(seed)
    return GPTModel(TINY.replace(**changes))


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_gpt2_small_has_163m_parameters_and_124m_with_tied_weights():
    with torch.device("meta"):
        model = GPTModel(GPT2_CONFIGS["gpt2"])
    assert count(model) == 163_009_536
    assert count(model) - model.out_head.weight.numel() == 124_412_160


@pytest.mark.parametrize(
    "name, tied",
    [("gpt2-medium", 354_749_440), ("gpt2-large", 773_891_840), ("gpt2-xl", 1_557_380_800)],
)
def test_larger_gpt2_sizes_have_their_published_tied_parameter_counts(name, tied):
    with torch.device("meta"):
        model = GPTModel(GPT2_CONFIGS[name])
    assert count(model) - model.out_head.weight.numel() == tied


def test_qkv_bias_adds_three_bias_vectors_per_block():
    assert count(tiny_model(qkv_bias=True)) - count(tiny_model()) == 2 * 3 * 16


def test_logits_have_one_score_per_vocabulary_entry_for_every_position():
    logits = tiny_model()(torch.randint(0, 50, (3, 5)))
    assert logits.shape == (3, 5, 50)


def test_an_input_longer_than_the_context_is_a_clear_error():
    with pytest.raises(ValueError, match="the input has 9 tokens, but the model's context_length is 8"):
        tiny_model()(torch.zeros(1, 9, dtype=torch.long))


def test_eval_mode_is_deterministic_and_train_mode_uses_dropout():
    model = tiny_model(drop_rate=0.5)
    x = torch.randint(0, 50, (2, 8))
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_both_attention_implementations_give_the_same_logits():
    x = torch.randint(0, 50, (2, 8))
    explicit = tiny_model(seed=1).eval()
    sdpa = tiny_model(seed=1).eval()
    for block in explicit.blocks:
        block.att.implementation = "explicit"
    assert torch.allclose(explicit(x), sdpa(x), atol=1e-5)
    assert GPTModel(TINY, attention="explicit").blocks[0].att.implementation == "explicit"


def test_the_model_is_causal_over_tokens():
    model = tiny_model().eval()
    x = torch.randint(0, 50, (1, 8))
    changed = x.clone()
    changed[0, 5:] = (x[0, 5:] + 1) % 50
    assert torch.allclose(model(x)[:, :5], model(changed)[:, :5], atol=1e-6)


def test_the_default_initialisation_is_pytorchs():
    model = tiny_model()
    assert abs(model.tok_emb.weight.std().item() - 1.0) < 0.1  # nn.Embedding: N(0, 1)
    assert torch.count_nonzero(model.blocks[0].ff.up.bias) > 0  # nn.Linear: uniform


def test_init_gpt2_weights_follows_gpt2():
    model = GPTModel(GPT2_CONFIGS["gpt2"].replace(n_layers=2, vocab_size=1000))
    model.init_gpt2_weights()
    assert abs(model.tok_emb.weight.std().item() - 0.02) < 0.001
    assert abs(model.blocks[0].att.out_proj.weight.std().item() - 0.01) < 0.001  # 0.02 / sqrt(4)
    assert torch.count_nonzero(model.blocks[0].ff.up.bias) == 0
    assert torch.all(model.final_norm.weight == 1)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"emb_dim": 768, "n_heads": 10}, r"emb_dim \(768\) must be divisible by n_heads \(10\)"),
        ({"n_layers": 0}, "n_layers must be a positive integer, got 0"),
        ({"vocab_size": 50.5}, "vocab_size must be a positive integer, got 50.5"),
        ({"context_length": True}, "context_length must be a positive integer, got True"),
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
    with pytest.raises(Exception):
        GPTConfig().emb_dim = 10


def test_flops_per_token_counts_matmuls_and_attention():
    cfg = GPT2_CONFIGS["gpt2"]
    matmul_parameters = 12 * 12 * 768**2 + 768 * 50257
    assert flops_per_token(cfg, tokens=0) == 2 * matmul_parameters
    assert flops_per_token(cfg) == 2 * matmul_parameters + 4 * 12 * 1024 * 768
    assert flops_per_token(cfg, tokens=256, training=True) == 3 * flops_per_token(cfg, tokens=256)


def test_generation_appends_the_requested_number_of_greedy_tokens():
    model = tiny_model().eval()
    prompt = torch.randint(0, 50, (2, 3))
    output = generate_greedy(model, prompt, max_new_tokens=4)
    assert output.shape == (2, 7) and torch.equal(output[:, :3], prompt)
    expected_first = model(prompt)[:, -1].argmax(dim=-1)
    assert torch.equal(output[:, 3], expected_first)
    assert torch.equal(generate_greedy(model, prompt, max_new_tokens=0), prompt)


def test_generation_crops_the_context_to_the_model_window():
    model = tiny_model().eval()
    long_prompt = torch.randint(0, 50, (1, 20))  # longer than context_length=8
    output = generate_greedy(model, long_prompt, max_new_tokens=3)
    assert output.shape == (1, 23)
    assert output[0, 20] == model(long_prompt[:, -8:])[0, -1].argmax()


def test_generation_rejects_bad_arguments():
    model = tiny_model().eval()
    with pytest.raises(ValueError, match=r"\(batch, tokens\)"):
        generate_greedy(model, torch.tensor([1, 2, 3]), 2)
    with pytest.raises(ValueError, match="max_new_tokens must be 0 or more"):
        generate_greedy(model, torch.tensor([[1, 2, 3]]), -1)
