"""llm.bpe: both trainers agree, the encoder round-trips, GPT-2 ids equal tiktoken's."""

import json

import pytest
import tiktoken
from hypothesis import HealthCheck, given, settings
import regex
from hypothesis import strategies as st

from llm.bpe import (
    GPT2_PATTERN,
    BPETokenizer,
    gpt2_byte_characters,
    gpt2_pieces,
    load_gpt2_tokenizer,
    load_tokenizer,
    merge_pair,
    save_tokenizer,
    train_bpe,
    train_bpe_plain,
)
from llm.datasets import gutenberg_books, read_text

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


@pytest.fixture(scope="module")
def gpt2():
    return load_gpt2_tokenizer()


@pytest.fixture(scope="module")
def reference():
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as error:  # noqa: BLE001 (any failure means: no offline files)
        pytest.fail(f"set TIKTOKEN_CACHE_DIR to the mirror's tiktoken-cache folder: {error}")


def test_merge_pair_replaces_left_to_right_without_overlap():
    assert merge_pair([1, 1, 1, 2, 1, 1], (1, 1), 9) == [9, 1, 2, 9]
    assert merge_pair([], (1, 2), 9) == [] and merge_pair([1], (1, 2), 9) == [1]


def test_the_first_merge_is_the_most_frequent_pair_and_ties_go_to_smaller_ids():
    assert train_bpe_plain("ab ab cd", 257) == [(97, 98)]  # "ab" twice
    assert train_bpe_plain("cd;ab", 257) == [(97, 98)]  # tie: (97, 98) < (99, 100)
    assert train_bpe("cd;ab", 257) == [(97, 98)]


def test_merges_never_cross_pre_token_boundaries():
    merges = train_bpe("a.a.a.a. b", 300)  # "a" and "." are separate pieces
    assert (ord("a"), ord(".")) not in merges


def test_training_stops_early_when_every_piece_is_one_token():
    assert train_bpe("aaaa", 1000) == train_bpe_plain("aaaa", 1000) == [(97, 97), (256, 256)]


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


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text())
def test_decode_undoes_encode_for_any_unicode_text(small_tokenizer, text):
    ids = small_tokenizer.encode_ordinary(text)
    assert small_tokenizer.decode(ids) == text
    assert all(0 <= i < 300 for i in ids)


def test_encoding_applies_the_earliest_merge_first():
    # merge 0: "b"+"c"; merge 1: "a"+"b". "abc" must become "a" + "bc".
    tokenizer = BPETokenizer([(98, 99), (97, 98)])
    assert tokenizer.encode("abc") == [97, 256]
    assert tokenizer.encode("ab") == [257]


def test_gpt2_files_give_gpt2s_vocabulary(mirror, gpt2):
    assert gpt2.vocab_size == 50257 and len(gpt2.merges) == 50000
    assert gpt2.special_tokens == {"<|endoftext|>": 50256}
    assert gpt2.decode([15496, 11, 995]) == "Hello, world"


def test_gpt2_byte_characters_are_printable_and_distinct():
    characters = gpt2_byte_characters()
    assert len(set(characters.values())) == 256
    assert characters[ord("A")] == "A" and characters[32] == "Ġ" and characters[10] == "Ċ"
    assert all(c.isprintable() and not c.isspace() for c in characters.values())


def test_gpt2_ids_equal_tiktoken_on_the_verdict_and_every_gutenberg_book(mirror, gpt2, reference):
    texts = [read_text("the-verdict.txt")] + [read_text(b.name) for b in gutenberg_books()]
    for text in texts:
        assert gpt2.encode_ordinary(text) == reference.encode_ordinary(text)


@pytest.mark.parametrize("text", AWKWARD, ids=range(len(AWKWARD)))
def test_gpt2_ids_equal_tiktoken_on_awkward_text(mirror, gpt2, reference, text):
    assert gpt2.encode(text) == reference.encode(text)
    assert gpt2.decode(gpt2.encode(text)) == text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.characters(codec="utf-8")))
def test_gpt2_ids_equal_tiktoken_on_generated_text(mirror, gpt2, reference, text):
    assert gpt2.encode(text, disallowed_special=()) == reference.encode(text, disallowed_special=())


def test_special_tokens_behave_like_tiktoken(mirror, gpt2, reference):
    text = "end.<|endoftext|>start"
    for options in [{"allowed_special": "all"}, {"allowed_special": {"<|endoftext|>"}},
                    {"disallowed_special": ()}]:
        assert gpt2.encode(text, **options) == reference.encode(text, **options)
    assert 50256 in gpt2.encode(text, allowed_special="all")
    assert 50256 not in gpt2.encode(text, disallowed_special=())
    assert gpt2.decode(gpt2.encode(text, allowed_special="all")) == text


def test_disallowed_special_tokens_in_input_are_a_clear_error(mirror, gpt2):
    with pytest.raises(ValueError, match=r"contains the special token '<\|endoftext\|>'.*allowed_special"):
        gpt2.encode("hello <|endoftext|>")


def test_unknown_token_ids_are_a_clear_error(small_tokenizer):
    with pytest.raises(ValueError, match="token id 301 is not in the vocabulary of 301 tokens"):
        small_tokenizer.decode([5, 301])


def test_save_and_load_round_trip(tmp_path, small_tokenizer):
    path = save_tokenizer(small_tokenizer, tmp_path / "tok.json")
    loaded = load_tokenizer(path)
    assert loaded.merges == small_tokenizer.merges
    assert loaded.special_tokens == small_tokenizer.special_tokens
    text = "the cat<|endoftext|> sat 🙂"
    assert loaded.encode(text, allowed_special="all") == small_tokenizer.encode(text, allowed_special="all")
    assert not (tmp_path / "tok.json.partial").exists()


def test_save_and_load_keep_gpt2s_byte_order(tmp_path, mirror, gpt2):
    loaded = load_tokenizer(save_tokenizer(gpt2, tmp_path / "gpt2.json"))
    text = "Byte order: ĠÄ\x00 ok"
    assert loaded.byte_ids == gpt2.byte_ids and loaded.encode(text) == gpt2.encode(text)


def test_vocab_size_below_256_is_a_clear_error():
    for trainer in (train_bpe, train_bpe_plain):
        with pytest.raises(ValueError, match="vocab_size must be at least 256 .one token per byte., got 100"):
            trainer("some text", 100)


GOOD_FILE = {"format": "llm-bpe", "version": 1, "pattern": "\\S+", "byte_ids": list(range(256)),
             "merges": [[97, 98]], "special_tokens": {}}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format": "other"}, "is not an llm-bpe tokenizer file"),
        ({"version": 7}, "has version 7; this code reads version 1"),
        ({"pattern": None}, r"lacks the fields \['pattern'\]"),
        ({"merges": [[1, 2, 3]]}, "every merge must be a pair of ids"),
        ({"merges": [[97, 300]]}, r"merge 0 joins ids \(97, 300\), but only ids below 256 exist"),
        ({"merges": [[97, 98], [97, 98]]}, "the same pair twice"),
        ({"byte_ids": [0] * 256}, "byte_ids must give each of the 256 bytes an id"),
        ({"special_tokens": {"<|x|>": 3}}, "special tokens need distinct ids of at least 257"),
    ],
)
def test_corrupt_or_inconsistent_tokenizer_files_are_clear_errors(tmp_path, changes, message):
    document = {key: value for key, value in (GOOD_FILE | changes).items() if value is not None}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=message):
        load_tokenizer(path)


def test_a_file_that_is_not_json_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.json"
    path.write_bytes(b"\x80 not json")
    with pytest.raises(ValueError, match="bad.json is not a tokenizer file"):
        load_tokenizer(path)


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
    (tmp_path / "vocab.bpe").write_text("\n".join([merges[0], line, *merges[2:]]), encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_gpt2_tokenizer(mirror / "gpt2" / "encoder.json", tmp_path / "vocab.bpe")


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab Z9'\n\r\t.!") + ["é", "œ", "—", "“", "™", "\ufeff", "日", "🙂", "\u3000", "\xa0", "\x85", "\x1c", "²", "\u0301"]), max_size=60))
def test_the_fast_split_equals_the_gpt2_regular_expression(text):
    assert gpt2_pieces(text) == regex.findall(GPT2_PATTERN, text)
