"""llm.pretrain: Gutenberg cleaning, the token cache, and the cached base model."""

import pytest
import torch

from llm import pretrain
from llm.datasets import gutenberg_books
from llm.pretrain import (
    BASE_MODEL_CONFIG,
    BASE_TRAINING,
    base_model,
    base_model_path,
    clean_gutenberg,
    gutenberg_token_ids,
    validation_books,
)

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
    for changes in [{"max_steps": 261}, {"lr": 1e-3}, {"precision": "bf16"}]:
        assert base_model_path(BASE_TRAINING.replace(**changes)) != base_model_path()


def test_the_base_recipe_is_the_books():
    assert (BASE_MODEL_CONFIG.emb_dim, BASE_MODEL_CONFIG.n_layers) == (256, 4)
    recipe = BASE_TRAINING
    assert (recipe.max_steps, recipe.batch_size, recipe.lr) == (200, 16, 2e-3)
    assert (recipe.schedule, recipe.warmup_steps, recipe.min_lr_ratio) == (
        "cosine",
        20,
        0.1,
    )
    assert recipe.max_grad_norm == 1.0 and recipe.seed == 123


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
