"""llm.gpt2: OpenAI's GPT-2 weights in Hugging Face format load into GPTModel.

The reference is a small random `transformers.GPT2LMHeadModel`, saved as
safetensors by `save_pretrained`, so the test needs no network.
"""

import pytest
import safetensors.torch
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from llm.checkpoint import CheckpointError
from llm.gpt2 import GPT2_REPOSITORIES, gpt2_config, load_gpt2_file, load_gpt2_weights
from llm.model import GPT2_CONFIGS, GPTConfig, GPTModel

OURS = GPTConfig(
    vocab_size=120,
    context_length=16,
    emb_dim=32,
    n_heads=4,
    n_layers=2,
    drop_rate=0.0,
    qkv_bias=True,
)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    torch.manual_seed(0)
    hf_config = GPT2Config(
        vocab_size=120,
        n_positions=16,
        n_embd=32,
        n_layer=2,
        n_head=4,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = GPT2LMHeadModel(hf_config).eval()
    # random biases and norms, so that every mapped tensor matters
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "ln_" in name or name.endswith("bias"):
                parameter.normal_(0.0, 0.1 if name.endswith("bias") else 1.0)
    folder = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(folder, safe_serialization=True)
    return model, folder / "model.safetensors"


def max_difference(ours, theirs, token_ids):
    with torch.no_grad():
        return (ours(token_ids) - theirs(token_ids).logits).abs().max().item()


def test_logits_match_transformers(reference):
    hf_model, path = reference
    ours = load_gpt2_file(path, OURS)
    token_ids = torch.randint(0, 120, (3, 16))
    assert max_difference(ours, hf_model, token_ids) <= 1e-5


def test_logits_match_without_a_qkv_bias_when_the_checkpoint_has_none(
    reference, tmp_path
):
    hf_model, path = reference
    state = safetensors.torch.load_file(path)
    for key in state:
        if key.endswith("c_attn.bias"):
            state[key] = torch.zeros_like(state[key])
    biases = [block.attn.c_attn.bias for block in hf_model.transformer.h]
    saved = [bias.detach().clone() for bias in biases]
    with torch.no_grad():
        for bias in biases:
            bias.zero_()
    try:
        ours = GPTModel(OURS.replace(qkv_bias=False)).eval()
        load_gpt2_weights(ours, state)
        assert max_difference(ours, hf_model, torch.randint(0, 120, (2, 9))) <= 1e-5
    finally:
        with torch.no_grad():
            for bias, original in zip(biases, saved, strict=True):
                bias.copy_(original)


def test_a_real_qkv_bias_needs_qkv_bias_true(reference):
    _, path = reference
    with pytest.raises(CheckpointError, match="build the model with qkv_bias=True"):
        load_gpt2_file(path, OURS.replace(qkv_bias=False))


def test_openai_names_without_prefix_and_with_the_mask_buffer_also_load(reference):
    hf_model, path = reference
    state = {
        k.removeprefix("transformer."): v
        for k, v in safetensors.torch.load_file(path).items()
    }
    # the causal mask stored by old files
    state["h.0.attn.bias"] = torch.ones(1, 1, 16, 16)
    ours = GPTModel(OURS).eval()
    load_gpt2_weights(ours, state)
    assert max_difference(ours, hf_model, torch.randint(0, 120, (1, 5))) <= 1e-5


def test_the_output_head_is_tied_to_the_token_embedding(reference):
    _, path = reference
    ours = load_gpt2_file(path, OURS)
    assert torch.equal(ours.out_head.weight, ours.tok_emb.weight)


def test_a_missing_tensor_is_a_clear_error(reference):
    _, path = reference
    state = safetensors.torch.load_file(path)
    del state["transformer.h.1.mlp.c_fc.weight"]
    with pytest.raises(
        CheckpointError, match=r"lacks 1 tensors: \['blocks.1.ff.up.weight'\]"
    ):
        load_gpt2_weights(GPTModel(OURS), state)


def test_a_wrong_shape_is_a_clear_error(reference):
    _, path = reference
    with pytest.raises(
        CheckpointError, match="pos_emb.weight: the checkpoint has shape"
    ):
        load_gpt2_file(path, OURS.replace(context_length=32))


def test_published_sizes_use_qkv_bias_full_context_and_no_dropout():
    for name in GPT2_CONFIGS:
        cfg = gpt2_config(name)
        assert cfg.qkv_bias and cfg.context_length == 1024 and cfg.drop_rate == 0.0
        assert GPT2_REPOSITORIES[name] == f"openai-community/{name}"
    with pytest.raises(ValueError, match="unknown GPT-2 model 'gpt3'"):
        gpt2_config("gpt3")


def test_a_file_with_more_layers_than_the_model_names_the_layer_count(reference):
    _, path = reference
    with pytest.raises(CheckpointError) as caught:
        load_gpt2_file(path, OURS.replace(n_layers=1))
    message = str(caught.value)
    assert "has 2 transformer blocks, the model 1" in message
    assert "n_layers=2" in message and "qkv_bias" not in message


def test_a_file_with_fewer_layers_than_the_model_names_the_layer_count(reference):
    _, path = reference
    with pytest.raises(CheckpointError, match="has 2 transformer blocks, the model 3"):
        load_gpt2_file(path, OURS.replace(n_layers=3))
