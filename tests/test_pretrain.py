"""llm.pretrain: Gutenberg cleaning, the token cache, the cached base model, and
its held-out score."""

import math

import pytest
import torch

from llm import pretrain
from llm.datasets import gutenberg_books
from llm.model import GPTModel
from llm.pretrain import (
    BASE_MODEL_CONFIG,
    BASE_TRAINING,
    base_model,
    base_model_path,
    clean_gutenberg,
    gutenberg_token_ids,
    held_out_loss,
    token_byte_lengths,
    validation_books,
)
from llm.tokenizer import gpt2_tokenizer

SAMPLE = (
    "\ufeffThe Project Gutenberg eBook of A Made-Up Tale\r\n\r\n"
    "This eBook is for the use of anyone anywhere.\r\n\r\n"
    "*** START OF THE PROJECT GUTENBERG EBOOK A MADE-UP TALE ***\r\n\r\n"
    "Chapter 1\r\n\r\nOnce upon a time.\r\n\r\n"
    "*** END OF THE PROJECT GUTENBERG EBOOK A MADE-UP TALE ***\r\n\r\n"
    "Section 1. General Terms of Use\r\n"
)


def test_cleaning_keeps_only_the_book_with_unix_line_ends():
    assert clean_gutenberg(SAMPLE) == "Chapter 1\n\nOnce upon a time.\n"


def test_older_marker_spellings_are_recognised():
    old = SAMPLE.replace("*** START OF THE", "***START OF THIS").replace(
        "*** END OF THE", "*** END OF THIS"
    )
    assert clean_gutenberg(old) == "Chapter 1\n\nOnce upon a time.\n"


def test_the_old_end_of_book_line_is_dropped_too():
    old = SAMPLE.replace(
        "Once upon a time.\r\n",
        "Once upon a time.\r\n\r\nEnd of the Project Gutenberg EBook of A Tale\r\n",
    )
    assert clean_gutenberg(old) == "Chapter 1\n\nOnce upon a time.\n"


def test_hard_line_wrapping_is_undone_but_paragraphs_stay():
    wrapped = SAMPLE.replace(
        "Once upon a time.", "Once upon\r\na time.\r\n\r\n\r\n\r\nThe end."
    )
    assert clean_gutenberg(wrapped) == "Chapter 1\n\nOnce upon a time.\n\nThe end.\n"


def test_text_without_markers_is_a_clear_error():
    with pytest.raises(ValueError, match="Project Gutenberg markers"):
        clean_gutenberg("Just a text.")


def test_every_registered_book_has_markers(mirror):
    from llm.datasets import read_text

    for book in gutenberg_books():
        text = clean_gutenberg(read_text(book.name))
        assert "\r" not in text and not text.startswith("\ufeff"), book.name
        for licence_text in [
            "START OF THE PROJECT",
            "END OF THE PROJECT",
            "FULL LICENSE",
        ]:
            assert licence_text not in text.upper(), (book.name, licence_text)


def test_validation_is_six_whole_books():
    held_out = validation_books()
    assert len(held_out) == 6 and held_out[0] == gutenberg_books()[0].name


def test_token_ids_are_split_by_book_and_cached(mirror, private_cache):
    train_ids, val_ids = gutenberg_token_ids()
    assert 4_500_000 < len(train_ids) < 5_500_000 and 300_000 < len(val_ids) < 1_200_000
    assert int(train_ids.max()) <= 50256 and train_ids.dtype == torch.int64
    # one <|endoftext|> after each held-out book
    assert (val_ids == 50256).sum() == 6
    cached = list((private_cache / "corpus").glob("gutenberg-gpt2-*.npz"))
    assert len(cached) == 1
    # from the cache
    again_train, _ = gutenberg_token_ids()
    assert torch.equal(again_train, train_ids)


def test_base_model_trains_on_a_cold_cache_and_loads_on_a_warm_one(mirror, monkeypatch):
    quick = BASE_TRAINING.replace(
        max_steps=2, batch_size=2, eval_every=1, eval_batches=1
    )
    assert not base_model_path(quick).exists()
    cold = base_model(device="cpu", settings=quick)
    assert base_model_path(quick).is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("a warm cache must not train again")

    monkeypatch.setattr(pretrain, "train_base_model", no_training)
    warm = base_model(device="cpu", settings=quick)
    for (name, a), (_, b) in zip(
        cold.state_dict().items(), warm.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert not warm.training


def test_the_cache_name_changes_with_the_recipe():
    assert base_model_path() == base_model_path(BASE_TRAINING.replace())
    for changes in [{"max_steps": 261}, {"lr": 1e-3}, {"precision": "fp32"}]:
        assert base_model_path(BASE_TRAINING.replace(**changes)) != base_model_path()


def test_the_base_recipe_is_the_books():
    assert (BASE_MODEL_CONFIG.emb_dim, BASE_MODEL_CONFIG.n_layers) == (256, 4)
    recipe = BASE_TRAINING
    assert (recipe.max_steps, recipe.batch_size, recipe.lr) == (270, 16, 2e-3)
    assert (recipe.schedule, recipe.warmup_steps, recipe.min_lr_ratio) == (
        "cosine",
        20,
        0.1,
    )
    assert recipe.max_grad_norm == 1.0 and recipe.seed == 123
    assert recipe.precision == "bf16"


def test_training_the_base_model_leaves_the_callers_random_state_alone(
    mirror, monkeypatch
):
    quick = BASE_TRAINING.replace(
        max_steps=1, batch_size=2, eval_every=1, eval_batches=1
    )
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    _, log = pretrain.train_base_model(quick, device="cpu", on_eval=None)
    assert torch.equal(torch.rand(2), expected) and log.step == 1


def test_token_byte_lengths_add_up_to_the_utf8_length_of_a_text():
    tokenizer = gpt2_tokenizer()
    text = "Caf\u00e9 na\u00efve \u2014 \u65e5\u672c, 1234 tokens!"
    ids = tokenizer.encode_ordinary(text)
    lengths = token_byte_lengths()
    assert lengths.shape == (50257,)
    assert lengths[ids].sum().item() == len(text.encode("utf-8"))
    assert lengths[tokenizer.encode_ordinary(" the")[0]] == 4
    # <|endoftext|> separates documents and stands for no text
    assert lengths[tokenizer.eot_token] == 0


def test_a_uniform_model_scores_the_log_of_the_vocabulary_on_held_out_text(
    mirror, tiny_config
):
    torch.manual_seed(0)
    model = GPTModel(tiny_config.replace(vocab_size=50257, context_length=32))
    # All logits zero: every token gets probability 1 / 50257
    torch.nn.init.zeros_(model.out_head.weight)
    model.train()
    loss, bits_per_byte = held_out_loss(model, n_windows=6, batch_size=4)
    assert loss == pytest.approx(math.log(50257), rel=1e-5)
    _, val_ids = gutenberg_token_ids()
    windows = val_ids[: len(val_ids) - (len(val_ids) - 1) % 32]
    targets = windows[1:].view(-1, 32)
    rows = torch.linspace(0, len(targets) - 1, 6).round().long()
    tokenizer = gpt2_tokenizer()
    eot = tokenizer.eot_token
    predicted = [t for t in targets[rows].flatten().tolist() if t != eot]
    n_bytes = len(tokenizer.decode_bytes(predicted))
    expected = 6 * 32 * math.log2(50257) / n_bytes
    assert bits_per_byte == pytest.approx(expected, rel=1e-5)
    # The caller's mode is restored
    assert model.training


@pytest.mark.parametrize("n_windows", [0, 10**9, 2.5, True])
def test_held_out_loss_rejects_a_window_count_outside_the_books(
    mirror, tiny_config, n_windows
):
    model = GPTModel(tiny_config.replace(vocab_size=50257))
    with pytest.raises(ValueError, match="n_windows must be"):
        held_out_loss(model, n_windows=n_windows)
