"""Byte-pair encoding: our fast trainer against the plain one and against Hugging
Face `tokenizers` (Rust), and our GPT-2 encoder against `tiktoken` (Rust)."""

import random

from bench.harness import Comparison
from llm.bpe import load_gpt2_tokenizer, train_bpe, train_bpe_plain
from llm.datasets import gutenberg_books, read_text
from llm.tokenizer import gpt2_tokenizer


def book_text(n_characters: int) -> str:
    """The first `n_characters` of the Gutenberg books, in registry order."""
    length, parts = 0, []
    for book in gutenberg_books():
        parts.append(read_text(book.name))
        length += len(parts[-1])
        if length >= n_characters:
            break
    return "".join(parts)[:n_characters]


def _tokenizers_trainer(text: str, vocab_size: int):
    """Train a byte-level BPE of `vocab_size` tokens with Hugging Face tokenizers."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    lines = text.splitlines(keepends=True)

    def train():
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(lines, trainer)

    return train


def comparisons() -> list[Comparison]:
    small, megabyte = book_text(200_000), book_text(1_000_000)
    ours = load_gpt2_tokenizer()
    reference = gpt2_tokenizer()
    book = read_text(gutenberg_books()[10].name)
    if ours.encode_ordinary(book) != reference.encode_ordinary(book):
        raise AssertionError("our GPT-2 ids differ from tiktoken's; fix that first")

    def encode_cold():
        ours.clear_cache()
        ours.encode_ordinary(book)

    # One piece of 100,000 letters: a quadratic merge loop would take minutes.
    long_word = "".join(random.Random(0).choices("abcdefgh", k=100_000))
    if ours.encode_ordinary(long_word) != reference.encode_ordinary(long_word):
        raise AssertionError("our ids for a long word differ from tiktoken's")

    def encode_long_word():
        ours.clear_cache()
        ours.encode_ordinary(long_word)

    return [
        Comparison(
            name="bpe: fast vs plain trainer, 200 KB",
            description="train_bpe vs train_bpe_plain, 200 KB of books, vocabulary 512",
            ours=lambda: train_bpe(small, 512),
            peer=lambda: train_bpe_plain(small, 512),
            target=50.0,
        ),
        Comparison(
            name="bpe: fast vs plain trainer, 1 MB",
            description=(
                "train_bpe vs train_bpe_plain, 1 MB of books, vocabulary 4096 (one "
                "round: the plain trainer takes about half an hour)"
            ),
            ours=lambda: train_bpe(megabyte, 4096),
            peer=lambda: train_bpe_plain(megabyte, 4096),
            target=300.0,
            rounds=1,
            warmup=0,
        ),
        Comparison(
            name="bpe: trainer vs tokenizers",
            description=(
                "train_bpe vs Hugging Face tokenizers' BpeTrainer (Rust, byte-level, "
                "same regex), 1 MB of books, vocabulary 4096; target: at most 3x slower"
            ),
            ours=lambda: train_bpe(megabyte, 4096),
            peer=_tokenizers_trainer(megabyte, 4096),
            target=1 / 3,
        ),
        Comparison(
            name="bpe: GPT-2 encode, cold cache",
            description=(
                f"encode one book ({len(book):,} characters) with GPT-2's merges, one "
                "thread, identical ids: ours with an empty piece cache vs tiktoken; "
                "target: at most 3x slower"
            ),
            ours=encode_cold,
            peer=lambda: reference.encode_ordinary(book),
            target=1 / 3,
        ),
        Comparison(
            name="bpe: GPT-2 encode, repeated text",
            description=(
                "the same book again: ours with its piece cache filled vs tiktoken; "
                "target: at most 1.5x slower"
            ),
            ours=lambda: ours.encode_ordinary(book),
            peer=lambda: reference.encode_ordinary(book),
            target=1 / 1.5,
        ),
        Comparison(
            name="bpe: GPT-2 encode, one long word",
            description=(
                "one 100,000-letter word (random letters a-h), identical ids: ours "
                "(heap-based merging, O(n log n)) vs tiktoken; target: at most 50x "
                "slower"
            ),
            ours=encode_long_word,
            peer=lambda: reference.encode_ordinary(long_word),
            target=1 / 50,
        ),
    ]
