"""llm.bpe: both trainers agree, the encoder round-trips and is linear in the length
of a piece, GPT-2 ids equal tiktoken's, tokenizer files are validated on load."""

import json
import math
import random

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm.bpe import (
    GPT2_PATTERN,
    BPETokenizer,
    TokenizerFileError,
    load_gpt2_tokenizer,
    load_tokenizer,
    merge_by_rank,
    merge_pair,
    save_tokenizer,
    split_gpt2_fast,
    train_bpe,
    train_bpe_plain,
)
from llm.datasets import gutenberg_books, read_text
from llm.errors import LLMError
from llm.tokenizer import gpt2_tokenizer

AWKWARD = [
    "",
    " ",
    "👍🏽 👨‍👩‍👧 🏳️‍🌈",
    "e\u0301 a\u0308\u0301 \u0301\u0301 start",
    "中文分词 日本語のテキスト 한국어",
    "مرحبا بالعالم नमस्ते दुनिया",
    " " * 50 + "x" + " " * 7 + "\n" * 12 + "\t\t \r\n \n",
    "1 12 123 1234 12345 123456 3.14159 1,000,000 ²³ ½ Ⅻ",
    "you're I'LL she'd 'tis rock'n'roll don't 's ' 'll",
    "\x00\x01\x7f\ufeffBOM and NUL",
    "a" * 300,
]
SUPPRESS = [HealthCheck.function_scoped_fixture]


@pytest.fixture(scope="module")
def gpt2():
    return load_gpt2_tokenizer()


@pytest.fixture(scope="module")
def reference():
    """tiktoken's GPT-2 encoding (`llm.tokenizer.gpt2_tokenizer`, a real
    `tiktoken.Encoding` with tiktoken's own pattern, built from the mirror)."""
    return gpt2_tokenizer()


def test_merge_pair_replaces_left_to_right_without_overlap():
    assert merge_pair([1, 1, 1, 2, 1, 1], (1, 1), 9) == [9, 1, 2, 9]
    assert merge_pair([], (1, 2), 9) == [] and merge_pair([1], (1, 2), 9) == [1]


def test_the_first_merge_is_the_most_frequent_pair_and_ties_go_to_smaller_ids():
    # "ab" occurs twice.
    assert train_bpe_plain("ab ab cd", 257) == [(97, 98)]
    # A tie: (97, 98) < (99, 100).
    assert train_bpe_plain("cd;ab", 257) == [(97, 98)]
    assert train_bpe("cd;ab", 257) == [(97, 98)]


def test_merges_never_cross_pre_token_boundaries():
    # "a" and "." are separate pieces.
    merges = train_bpe("a.a.a.a. b", 300)
    assert (ord("a"), ord(".")) not in merges


def test_training_stops_early_when_every_piece_is_one_token():
    expected = [(97, 97), (256, 256)]
    assert train_bpe("aaaa", 1000) == train_bpe_plain("aaaa", 1000) == expected


def test_both_trainers_learn_identical_merges_on_real_text(mirror):
    verdict = read_text("the-verdict.txt")
    assert train_bpe(verdict, 400) == train_bpe_plain(verdict, 400)
    book = read_text(gutenberg_books()[3].name)[:30_000]
    assert train_bpe(book, 350) == train_bpe_plain(book, 350)


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet="ab c'\n1é🙂", max_size=80), st.integers(256, 300))
def test_both_trainers_learn_identical_merges_on_generated_text(text, vocab_size):
    assert train_bpe(text, vocab_size) == train_bpe_plain(text, vocab_size)


@pytest.fixture(scope="module")
def small_tokenizer():
    text = "the cat sat on the mat; the dog sat on the log. " * 5
    return BPETokenizer(train_bpe(text, 300), special_tokens={"<|endoftext|>": 300})


@settings(max_examples=200, deadline=None, suppress_health_check=SUPPRESS)
@given(st.text(alphabet=st.characters(codec="utf-8")))
def test_decode_undoes_encode_for_any_unicode_text(small_tokenizer, text):
    ids = small_tokenizer.encode_ordinary(text)
    assert small_tokenizer.decode(ids) == text
    assert all(0 <= i < 300 for i in ids)


def test_encoding_applies_the_earliest_merge_first():
    # Merge 0: "b"+"c"; merge 1: "a"+"b". "abc" must become "a" + "bc".
    tokenizer = BPETokenizer([(98, 99), (97, 98)])
    assert tokenizer.encode("abc") == [97, 256]
    assert tokenizer.encode("ab") == [257]


def test_equal_ranks_merge_leftmost_first():
    # "aaa" with the one merge "a"+"a": the left pair goes first.
    assert merge_by_rank([97, 97, 97], {(97, 97): 0}) == [256, 97]
    assert merge_by_rank([97] * 5, {(97, 97): 0, (256, 256): 1}) == [257, 97]
    assert merge_by_rank([], {(97, 97): 0}) == [] and merge_by_rank([5], {}) == [5]


class CountedRank(int):
    """A rank that counts how often it is compared: a measure of the work of
    the merge loop that does not depend on the speed of the machine."""

    comparisons = 0

    def __lt__(self, other):
        CountedRank.comparisons += 1
        return int.__lt__(self, other)

    def __le__(self, other):
        CountedRank.comparisons += 1
        return int.__le__(self, other)

    def __gt__(self, other):
        CountedRank.comparisons += 1
        return int.__gt__(self, other)

    def __ge__(self, other):
        CountedRank.comparisons += 1
        return int.__ge__(self, other)

    def __eq__(self, other):
        CountedRank.comparisons += 1
        return int.__eq__(self, other)

    def __ne__(self, other):
        CountedRank.comparisons += 1
        return int.__ne__(self, other)

    __hash__ = int.__hash__


def test_encoding_a_long_piece_takes_n_log_n_rank_comparisons_not_n_squared():
    # Merges "a"+"a", "aa"+"aa", ...: 4,095 letters become tokens of 2,048, 1,024,
    # ..., 2 letters and a single "a" (the piece is not a token of its own).
    merges = [(97, 97)] + [(256 + i, 256 + i) for i in range(11)]
    tokenizer = BPETokenizer(merges)
    ranks = tokenizer.ranks.items()
    tokenizer.ranks = {pair: CountedRank(rank) for pair, rank in ranks}
    length = 4095
    CountedRank.comparisons = 0
    expected = [256 + size for size in range(10, -1, -1)] + [97]
    assert tokenizer.encode_ordinary("a" * length) == expected
    # At least one comparison per merge; a quadratic loop makes about
    # length**2 / 2, 8 million, here.
    assert length < CountedRank.comparisons <= 4 * length * math.log2(length)


def test_a_200000_letter_word_gets_tiktokens_ids(mirror, gpt2, reference):
    word = "".join(random.Random(0).choices("abcde", k=200_000))
    assert gpt2.encode_ordinary(word) == reference.encode_ordinary(word)
    digits = "".join(random.Random(1).choices("0123456789", k=50_000))
    assert gpt2.encode_ordinary(digits) == reference.encode_ordinary(digits)


@st.composite
def long_repetitive_pieces(draw):
    """Text of long pieces: a few letters (or digits, or symbols, or spaces)
    repeated hundreds of times, with a little variation."""
    alphabet = draw(st.sampled_from(["ab", "abc", "eé", "xyz🙂", "0123", "!?.", " \t"]))
    unit = draw(st.text(alphabet=alphabet, min_size=1, max_size=5))
    times = draw(st.integers(50, 600))
    prefix = draw(st.text(alphabet=alphabet, max_size=3))
    suffix = draw(st.text(alphabet=alphabet, max_size=3))
    return prefix + unit * times + suffix


@settings(max_examples=60, deadline=None, suppress_health_check=SUPPRESS)
@given(long_repetitive_pieces())
def test_gpt2_ids_equal_tiktoken_on_long_repetitive_pieces(gpt2, reference, text):
    assert gpt2.encode_ordinary(text) == reference.encode_ordinary(text)


def test_gpt2_files_give_gpt2s_vocabulary(mirror, gpt2):
    assert gpt2.vocab_size == 50257 and len(gpt2.merges) == 50000
    assert gpt2.special_tokens == {"<|endoftext|>": 50256}
    assert gpt2.decode([15496, 11, 995]) == "Hello, world"


def test_gpt2_ids_equal_tiktoken_on_the_verdict_and_every_gutenberg_book(
    mirror, gpt2, reference
):
    texts = [read_text("the-verdict.txt")]
    texts += [read_text(book.name) for book in gutenberg_books()]
    for text in texts:
        assert gpt2.encode_ordinary(text) == reference.encode_ordinary(text)


@pytest.mark.parametrize("text", AWKWARD, ids=range(len(AWKWARD)))
def test_gpt2_ids_equal_tiktoken_on_awkward_text(mirror, gpt2, reference, text):
    assert gpt2.encode(text) == reference.encode(text)
    assert gpt2.decode(gpt2.encode(text)) == text


@settings(max_examples=300, deadline=None, suppress_health_check=SUPPRESS)
@given(st.text(alphabet=st.characters(codec="utf-8")))
def test_gpt2_ids_equal_tiktoken_on_generated_text(mirror, gpt2, reference, text):
    options = {"disallowed_special": ()}
    assert gpt2.encode(text, **options) == reference.encode(text, **options)


SURROGATES = ["\ud800", "\udfff", "\ud83d", "\ude00", "\ud83d\ude00"]


@pytest.mark.parametrize("surrogate", SURROGATES, ids=ascii)
def test_lone_surrogates_become_the_replacement_character_as_in_tiktoken(
    gpt2, reference, surrogate
):
    text = f"a {surrogate} b{surrogate}<|endoftext|>"
    assert gpt2.encode_ordinary(text) == reference.encode_ordinary(text)
    options = {"allowed_special": "all"}
    assert gpt2.encode(text, **options) == reference.encode(text, **options)


@settings(max_examples=150, deadline=None, suppress_health_check=SUPPRESS)
@given(
    st.text(
        alphabet=st.one_of(
            st.characters(categories=["Cs"]), st.sampled_from(list("ab 1é🙂\n"))
        )
    )
)
def test_text_with_surrogates_gets_tiktokens_ids(gpt2, reference, text):
    assert gpt2.encode_ordinary(text) == reference.encode_ordinary(text)


def test_special_tokens_behave_like_tiktoken(mirror, gpt2, reference):
    text = "end.<|endoftext|>start"
    for options in [
        {"allowed_special": "all"},
        {"allowed_special": {"<|endoftext|>"}},
        {"disallowed_special": ()},
    ]:
        assert gpt2.encode(text, **options) == reference.encode(text, **options)
    assert 50256 in gpt2.encode(text, allowed_special="all")
    assert 50256 not in gpt2.encode(text, disallowed_special=())
    assert gpt2.decode(gpt2.encode(text, allowed_special="all")) == text


def test_disallowed_special_tokens_in_input_are_a_clear_error(mirror, gpt2):
    message = r"contains the special token '<\|endoftext\|>'.*allowed_special"
    with pytest.raises(ValueError, match=message):
        gpt2.encode("hello <|endoftext|>")


@pytest.mark.parametrize("argument", ["allowed_special", "disallowed_special"])
@pytest.mark.parametrize("value", ["endoftext", "<|endoftext|>", "e"])
def test_special_token_arguments_given_as_a_string_are_a_clear_error(
    small_tokenizer, argument, value
):
    message = f'{argument} must be "all" or a set of special tokens.*got the string'
    with pytest.raises(ValueError, match=message):
        small_tokenizer.encode("the end.<|endoftext|>", **{argument: value})


@pytest.mark.parametrize("argument", ["allowed_special", "disallowed_special"])
def test_special_tokens_the_tokenizer_does_not_have_are_a_clear_error(
    small_tokenizer, argument
):
    message = rf"{argument} names \['<\|fim\|>'\], which this tokenizer does not have"
    with pytest.raises(ValueError, match=message):
        small_tokenizer.encode("the end", **{argument: {"<|fim|>"}})


def test_the_longest_allowed_special_token_wins():
    tokenizer = BPETokenizer([], special_tokens={"<|a|>": 256, "<|a|>b": 257})
    assert tokenizer.encode("<|a|>b", allowed_special="all") == [257]


def test_unknown_token_ids_are_a_clear_error(small_tokenizer):
    message = "token id 301 is not in the vocabulary of 301 tokens"
    with pytest.raises(ValueError, match=message):
        small_tokenizer.decode([5, 301])


def test_save_and_load_round_trip(tmp_path, small_tokenizer):
    path = save_tokenizer(small_tokenizer, tmp_path / "tok.json")
    loaded = load_tokenizer(path)
    assert loaded.merges == small_tokenizer.merges
    assert loaded.special_tokens == small_tokenizer.special_tokens
    text = "the cat<|endoftext|> sat 🙂"
    options = {"allowed_special": "all"}
    assert loaded.encode(text, **options) == small_tokenizer.encode(text, **options)
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"]


def test_save_and_load_keep_gpt2s_byte_order(tmp_path, mirror, gpt2):
    loaded = load_tokenizer(save_tokenizer(gpt2, tmp_path / "gpt2.json"))
    text = "Byte order: ĠÄ\x00 ok"
    assert loaded.byte_ids == gpt2.byte_ids and loaded.encode(text) == gpt2.encode(text)


def test_vocab_size_below_256_is_a_clear_error():
    message = "vocab_size must be at least 256 .one token per byte., got 100"
    for trainer in (train_bpe, train_bpe_plain):
        with pytest.raises(ValueError, match=message):
            trainer("some text", 100)


GOOD_FILE = {
    "format": "llm-bpe",
    "version": 1,
    "pattern": "\\S+|\\s+",
    "byte_ids": list(range(256)),
    "merges": [[97, 98]],
    "special_tokens": {},
}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format": "other"}, "is not an llm-bpe tokenizer file"),
        ({"version": 7}, "has version 7; this code reads version 1"),
        ({"pattern": None}, r"lacks the fields \['pattern'\]"),
        ({"merges": [[1, 2, 3]]}, r"merges: merge 0 must be a pair of integer ids"),
        (
            {"merges": [[97, 300]]},
            r"merges: merge 0 joins ids \(97, 300\), but only ids below 256 exist",
        ),
        ({"merges": [[97, 98], [97, 98]]}, "merges: the same pair occurs twice"),
        ({"byte_ids": [0] * 256}, "byte_ids must give each of the 256 bytes an id"),
        (
            {"special_tokens": {"<|x|>": 3}},
            "special_tokens need distinct ids of at least 257",
        ),
    ],
)
def test_corrupt_or_inconsistent_tokenizer_files_are_clear_errors(
    tmp_path, changes, message
):
    document = {k: v for k, v in (GOOD_FILE | changes).items() if v is not None}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(TokenizerFileError, match=message):
        load_tokenizer(path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        # A pattern that drops text: "Hello, world!" would become "Helloworld".
        ({"pattern": "\\p{L}+"}, r"pattern '\\\\p\{L\}\+' loses text"),
        ({"pattern": "\\S+"}, "loses text"),
        ({"pattern": "(\\S+)|\\s+"}, "loses text"),
        ({"pattern": ""}, "loses text"),
        ({"pattern": "[a-"}, "pattern '\\[a-' is not a valid regular expression"),
        ({"pattern": 42}, "the field 'pattern' must be a JSON str"),
        (
            {"special_tokens": {"": 257}},
            "special_tokens: a special token must be a non-empty",
        ),
        (
            {"special_tokens": {"<|x|>": 257.5}},
            r"the id of '<\|x\|>' must be an integer",
        ),
        (
            {"special_tokens": {"<|x|>": True}},
            r"the id of '<\|x\|>' must be an integer",
        ),
        (
            {"special_tokens": ["<|x|>"]},
            "the field 'special_tokens' must be a JSON object",
        ),
        (
            {"merges": [[97.9, 98]]},
            r"merge 0 must be a pair of integer ids, got \[97.9, 98\]",
        ),
        ({"merges": [[97, True]]}, "merge 0 must be a pair of integer ids"),
        ({"merges": [97, 98]}, "merge 0 must be a pair of integer ids, got 97"),
        ({"merges": {"0": [97, 98]}}, "the field 'merges' must be a JSON list"),
        ({"byte_ids": [float(i) for i in range(256)]}, "byte_ids must give each"),
        ({"byte_ids": list(range(255))}, "byte_ids must give each"),
        ({"byte_ids": "0123"}, "the field 'byte_ids' must be a JSON list"),
    ],
    ids=repr,
)
def test_malformed_tokenizer_fields_are_errors_naming_the_file_and_field(
    tmp_path, changes, message
):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(GOOD_FILE | changes))
    with pytest.raises(TokenizerFileError, match=message) as caught:
        load_tokenizer(path)
    assert str(caught.value).startswith(str(path))


def test_the_good_file_loads_and_keeps_every_character(tmp_path):
    path = tmp_path / "good.json"
    path.write_text(json.dumps(GOOD_FILE))
    tokenizer = load_tokenizer(path)
    text = "Hello, world!\n\t 42"
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_tokenizer_file_errors_are_llm_errors_and_value_errors(tmp_path):
    path = tmp_path / "bad.json"
    path.write_bytes(b"\x80 not json")
    with pytest.raises(TokenizerFileError, match="bad.json is not a tokenizer file"):
        load_tokenizer(path)
    assert issubclass(TokenizerFileError, LLMError)
    assert issubclass(TokenizerFileError, ValueError)


def test_the_constructor_rejects_what_a_file_could_not_hold():
    with pytest.raises(ValueError, match=r"pattern '\\\\p\{L\}\+' loses text"):
        BPETokenizer([], pattern=r"\p{L}+")
    with pytest.raises(ValueError, match="merge 0 must be a pair of integer ids"):
        BPETokenizer([(97.0, 98)])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("Ġ t x", "line 2: expected two known tokens"),
        ("Ġ nosuchtoken", "line 2: expected two known tokens"),
        ("h e", r"line 2: merge 'h e' should create id 256, but .* gives \d+"),
    ],
)
def test_corrupt_gpt2_merges_files_are_clear_errors(tmp_path, mirror, line, message):
    merges = (mirror / "gpt2" / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    changed = "\n".join([merges[0], line, *merges[2:]])
    (tmp_path / "vocab.bpe").write_text(changed, encoding="utf-8")
    with pytest.raises(TokenizerFileError, match=message):
        load_gpt2_tokenizer(mirror / "gpt2" / "encoder.json", tmp_path / "vocab.bpe")


UNUSUAL = ["é", "œ", "—", "“", "™", "\ufeff", "日", "🙂", "\u3000", "\xa0", "\x85"]


@settings(max_examples=400, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(
            list("ab Z9'\n\r\t.!") + UNUSUAL + ["\x1c", "²", "\u0301"]
        ),
        max_size=60,
    )
)
def test_the_fast_split_equals_the_gpt2_regular_expression(text):
    assert split_gpt2_fast(text) == regex.findall(GPT2_PATTERN, text)
