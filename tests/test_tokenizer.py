"""Word-level tokenizers and GPT-2's byte-pair encoding (checked against tiktoken)."""

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from llm.datasets import gutenberg_books, read_text
from llm.tokenizer import (
    END_OF_TEXT,
    UNKNOWN,
    SimpleTokenizer,
    build_vocab,
    gpt2_byte_decoder,
    gpt2_byte_order,
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


@pytest.fixture(scope="module")
def reference():
    """tiktoken's own GPT-2 encoding (offline through TIKTOKEN_CACHE_DIR)."""
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as error:  # no cache and no network
        pytest.fail(f"set TIKTOKEN_CACHE_DIR to the mirror's tiktoken-cache folder: {error}")


# --- splitting and vocabularies ----------------------------------------------


def test_split_text_keeps_words_contractions_and_double_dashes_whole():
    assert split_text('Hello, world. Is this-- a "test"? Don\'t _panic_.') == [
        "Hello", ",", "world", ".", "Is", "this", "--", "a", '"', "test", '"', "?",
        "Don't", "_", "panic", "_", ".",
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
    text = '"It\'s the last he painted, you know," Mrs. Gisburn said with pardonable pride.'
    ids = tokenizer.encode(text)
    assert len(ids) == 19
    assert tokenizer.decode(ids) == '" It\'s the last he painted, you know, " Mrs. Gisburn said with pardonable pride.'


def test_an_unknown_word_is_an_error_naming_it_and_the_remedy(verdict_vocab):
    tokenizer = SimpleTokenizer(verdict_vocab)
    with pytest.raises(ValueError, match=r"2 token\(s\) are not in the vocabulary: 'Hello', 'robots'\..*unknown_token='<\|unk\|>'"):
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


def test_gpt2_byte_order_is_a_permutation_of_all_bytes():
    order = gpt2_byte_order()
    assert sorted(order) == list(range(256)) and order[:3] == [33, 34, 35]


def test_gpt2_byte_decoder_maps_256_distinct_characters_to_all_bytes():
    decoder = gpt2_byte_decoder()
    assert len(decoder) == 256 and sorted(decoder.values()) == list(range(256))
    assert decoder["Ġ"] == ord(" ") and decoder["!"] == ord("!")


def test_gpt2_tokenizer_has_gpt2s_vocabulary(mirror):
    tokenizer = gpt2_tokenizer()
    assert tokenizer.n_vocab == 50257
    assert tokenizer.encode(END_OF_TEXT, allowed_special={END_OF_TEXT}) == [50256]
    assert tokenizer.encode("Hello, world") == [15496, 11, 995]


def test_gpt2_tokenizer_matches_tiktoken_on_the_verdict_and_gutenberg(mirror, reference):
    ours = gpt2_tokenizer()
    texts = [read_text("the-verdict.txt")] + [read_text(book.name) for book in gutenberg_books()[:5]]
    for text in texts:
        assert ours.encode(text) == reference.encode(text)


@pytest.mark.parametrize("text", AWKWARD_TEXTS)
def test_gpt2_tokenizer_matches_tiktoken_on_awkward_text(mirror, reference, text):
    assert gpt2_tokenizer().encode(text) == reference.encode(text)


def test_end_of_text_in_input_is_refused_unless_allowed(mirror):
    tokenizer = gpt2_tokenizer()
    with pytest.raises(ValueError, match="disallowed special token"):
        tokenizer.encode("one<|endoftext|>two")
    assert tokenizer.encode("one<|endoftext|>two", allowed_special={END_OF_TEXT}) == [505, 50256, 11545]


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_gpt2_decode_inverts_encode_for_any_unicode_text(text):
    tokenizer = gpt2_tokenizer()
    assert tokenizer.decode(tokenizer.encode(text, disallowed_special=())) == text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60))
def test_gpt2_ids_equal_tiktokens_for_any_unicode_text(reference, text):
    assert gpt2_tokenizer().encode(text, disallowed_special=()) == reference.encode(text, disallowed_special=())
