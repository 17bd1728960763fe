"""Word-level tokenizers and GPT-2's byte-pair encoding (checked against tiktoken)."""

import os

import pytest
import tiktoken
import tiktoken.load
from hypothesis import given, settings
from hypothesis import strategies as st
from tiktoken_ext import openai_public

from llm.datasets import fetch, gutenberg_books, read_text
from llm.tokenizer import (
    END_OF_TEXT,
    UNKNOWN,
    SimpleTokenizer,
    build_vocab,
    gpt2_byte_characters,
    gpt2_tokenizer,
    split_text,
)

AWKWARD_TEXTS = [
    "Hello, world! I'm here; you're there, they'll see -- it's 2024.",
    "emoji: 😀🙈👩‍👩‍👧‍👦 and flags 🇩🇪🇯🇵",
    "combining marks: e\u0301 a\u0308 n\u0303 Å vs A\u030a",
    "CJK: 大規模言語モデルは次のトークンを予測する。한국어 텍스트",
    "Arabic: النماذج اللغوية الكبيرة, Hebrew: שלום עולם",
    "spaces:    four,\t\ttabs,\n\n\nnewlines\r\n and trailing   ",
    "digits 3.14159 1,000,000 007 12345678901234567890",
    "contractions: don't won't I've she'd we'll they're it's DON'T",
    "    leading spaces and\u00a0non-breaking\u2003em space",
    "",
]


def tiktoken_gpt2_from_mirror(tiktoken_cache) -> tiktoken.Encoding:
    """`tiktoken.get_encoding("gpt2")`, built offline: tiktoken's own definition
    of the encoding (`tiktoken_ext.openai_public.gpt2`), with its file loader
    pointed at the mirror's copies. The loader checks them against the SHA-256
    hashes that tiktoken pins, and keeps its copies in `tiktoken_cache`."""
    load_from_urls = tiktoken.load.data_gym_to_mergeable_bpe_ranks

    def load_from_mirror(vocab_bpe_file, encoder_json_file, **hashes):
        assert vocab_bpe_file.endswith("/vocab.bpe")
        assert encoder_json_file.endswith("/encoder.json")
        return load_from_urls(
            str(fetch("gpt2/vocab.bpe")), str(fetch("gpt2/encoder.json")), **hashes
        )

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIKTOKEN_CACHE_DIR", str(tiktoken_cache))
        patch.setattr(
            openai_public, "data_gym_to_mergeable_bpe_ranks", load_from_mirror
        )
        return tiktoken.Encoding(**openai_public.gpt2())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """tiktoken's own GPT-2 encoding, offline (see `tiktoken_gpt2_from_mirror`)."""
    if not os.environ.get("LLM_DATA_DIR"):
        pytest.fail("set LLM_DATA_DIR to the data mirror folder to run this test")
    return tiktoken_gpt2_from_mirror(tmp_path_factory.mktemp("tiktoken-cache"))


# --- splitting and vocabularies ----------------------------------------------


def test_split_text_keeps_words_contractions_and_double_dashes_whole():
    assert split_text('Hello, world. Is this-- a "test"? Don\'t _panic_.') == [
        "Hello",
        ",",
        "world",
        ".",
        "Is",
        "this",
        "--",
        "a",
        '"',
        "test",
        '"',
        "?",
        "Don't",
        "_",
        "panic",
        "_",
        ".",
    ]


def test_split_text_drops_all_whitespace():
    assert split_text("  a \t b\n\nc  ") == ["a", "b", "c"]


def test_the_verdict_has_4608_tokens_and_1157_distinct_ones(mirror):
    tokens = split_text(read_text("the-verdict.txt"))
    assert (len(tokens), len(set(tokens))) == (4608, 1157)


def test_build_vocab_sorts_tokens_and_appends_the_special_tokens():
    vocab = build_vocab("b a c a")
    assert vocab == {"a": 0, "b": 1, "c": 2, END_OF_TEXT: 3, UNKNOWN: 4}


def test_build_vocab_does_not_duplicate_special_tokens_found_in_the_text():
    vocab = build_vocab("x <|unk|> y", special_tokens=("<|unk|>",))
    assert list(vocab) == ["<", ">", "unk", "x", "y", "|", "<|unk|>"]


# --- the simple tokenizer ----------------------------------------------------


@pytest.fixture(scope="module")
def verdict_vocab():
    return build_vocab(read_text("the-verdict.txt"))


def test_simple_tokenizer_round_trips_a_sentence_of_the_story(verdict_vocab):
    tokenizer = SimpleTokenizer(verdict_vocab)
    text = (
        '"It\'s the last he painted, you know," Mrs. Gisburn said with pardonable '
        "pride."
    )
    ids = tokenizer.encode(text)
    assert len(ids) == 19
    assert tokenizer.decode(ids) == (
        '" It\'s the last he painted, you know, " Mrs. Gisburn said with pardonable '
        "pride."
    )


def test_an_unknown_word_is_an_error_naming_it_and_the_remedy(verdict_vocab):
    tokenizer = SimpleTokenizer(verdict_vocab)
    message = (
        r"2 token\(s\) are not in the vocabulary: 'Hello', 'robots'\."
        r".*unknown_token='<\|unk\|>'"
    )
    with pytest.raises(ValueError, match=message):
        tokenizer.encode("Hello, do you like robots? Hello again.")


def test_unknown_words_map_to_the_unknown_token_when_asked(verdict_vocab):
    tokenizer = SimpleTokenizer(verdict_vocab, unknown_token=UNKNOWN)
    ids = tokenizer.encode("Hello, do you like robots?")
    assert ids[0] == ids[5] == verdict_vocab[UNKNOWN]
    assert tokenizer.decode(ids) == "<|unk|>, do you like <|unk|>?"


def test_special_tokens_are_matched_verbatim(verdict_vocab):
    tokenizer = SimpleTokenizer(verdict_vocab)
    ids = tokenizer.encode("the end.<|endoftext|>The")
    assert ids[3] == verdict_vocab[END_OF_TEXT] and len(ids) == 5


def test_decoding_an_id_outside_the_vocabulary_is_an_error(verdict_vocab):
    with pytest.raises(ValueError, match="ids not in the vocabulary"):
        SimpleTokenizer(verdict_vocab).decode([0, 99999])


def test_a_vocabulary_with_duplicate_ids_is_rejected():
    with pytest.raises(ValueError, match="same id"):
        SimpleTokenizer({"a": 0, "b": 0})


def test_an_unknown_token_missing_from_the_vocabulary_is_rejected():
    with pytest.raises(ValueError, match="not in the vocabulary; add it first"):
        SimpleTokenizer({"a": 0}, unknown_token=UNKNOWN)


# --- GPT-2 byte-pair encoding --------------------------------------------------


def test_gpt2_byte_characters_are_printable_distinct_and_cover_every_byte():
    characters = gpt2_byte_characters()
    assert sorted(characters) == list(range(256))
    assert len(set(characters.values())) == 256
    assert (
        characters[ord("A")] == "A" and characters[32] == "Ġ" and characters[10] == "Ċ"
    )
    assert all(c.isprintable() and not c.isspace() for c in characters.values())


def test_gpt2_tokenizer_is_tiktokens_own_gpt2_encoding(mirror, reference):
    ours = gpt2_tokenizer()
    assert ours.name == reference.name == "gpt2"
    assert ours._pat_str == reference._pat_str
    assert ours._mergeable_ranks == reference._mergeable_ranks
    assert ours._special_tokens == reference._special_tokens
    assert ours.n_vocab == reference.n_vocab == 50257


def test_gpt2_tokenizer_needs_no_tiktoken_cache(mirror, monkeypatch, tmp_path):
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.setenv("DATA_GYM_CACHE_DIR", str(tmp_path / "nowhere"))
    gpt2_tokenizer.cache_clear()
    try:
        assert gpt2_tokenizer().encode("Hello, world") == [15496, 11, 995]
    finally:
        gpt2_tokenizer.cache_clear()
    assert not (tmp_path / "nowhere").exists()


def test_gpt2_tokenizer_has_gpt2s_vocabulary(mirror):
    tokenizer = gpt2_tokenizer()
    assert tokenizer.n_vocab == 50257
    assert tokenizer.encode(END_OF_TEXT, allowed_special={END_OF_TEXT}) == [50256]
    assert tokenizer.encode("Hello, world") == [15496, 11, 995]


def test_gpt2_tokenizer_matches_tiktoken_on_the_verdict_and_gutenberg(
    mirror, reference
):
    ours = gpt2_tokenizer()
    texts = [read_text("the-verdict.txt")] + [
        read_text(book.name) for book in gutenberg_books()[:5]
    ]
    for text in texts:
        assert ours.encode(text) == reference.encode(text)


@pytest.mark.parametrize("text", AWKWARD_TEXTS)
def test_gpt2_tokenizer_matches_tiktoken_on_awkward_text(mirror, reference, text):
    assert gpt2_tokenizer().encode(text) == reference.encode(text)


def test_end_of_text_in_input_is_refused_unless_allowed(mirror):
    tokenizer = gpt2_tokenizer()
    with pytest.raises(ValueError, match="disallowed special token"):
        tokenizer.encode("one<|endoftext|>two")
    assert tokenizer.encode("one<|endoftext|>two", allowed_special={END_OF_TEXT}) == [
        505,
        50256,
        11545,
    ]


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_gpt2_decode_inverts_encode_for_any_unicode_text(text):
    tokenizer = gpt2_tokenizer()
    assert tokenizer.decode(tokenizer.encode(text, disallowed_special=())) == text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60))
def test_gpt2_ids_equal_tiktokens_for_any_unicode_text(reference, text):
    assert gpt2_tokenizer().encode(text, disallowed_special=()) == reference.encode(
        text, disallowed_special=()
    )
