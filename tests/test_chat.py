"""llm.chat: the chat template (chapter 7's prompt format), the streaming
decoder (multi-byte characters and stop strings split across tokens), the
sliding context, and the chat session that uses them."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm.chat import (
    CHAT_STOP,
    ChatSession,
    ContextOverflowError,
    TextDecoder,
    chat_prompt,
    fit_context,
    fit_messages,
)
from llm.generate import generate
from llm.instruct import PROMPT_PREAMBLE, format_prompt
from llm.model import GPTConfig, GPTModel
from llm.tokenizer import gpt2_tokenizer

TOKENIZER = gpt2_tokenizer()
# Text with characters of one to four UTF-8 bytes, and the pieces of stop strings
TEXT = st.lists(
    st.sampled_from([*"ab #\n:Ié€😀", "###", " Instruction"]), max_size=25
).map("".join)


def decode_all(pieces_of: TextDecoder, ids: list[int]) -> str:
    """Push every id, then finish; return the concatenated released text."""
    return "".join(pieces_of.push(i) for i in ids) + pieces_of.finish()


def cut_at_first_stop(text: str, stop: list[str]) -> str:
    """The reference: `text` up to the stop string that is complete first."""
    found = [(text.find(s) + len(s), text.find(s)) for s in stop if s in text]
    return text[: min(found)[1]] if found else text


def user(content: str) -> dict:
    return {"role": "user", "content": content}


# ---- chat_prompt ----


@given(st.text(min_size=1).filter(str.strip))
def test_one_user_message_renders_exactly_chapter_7s_prompt(content):
    assert chat_prompt([user(content)]) == format_prompt({"instruction": content})


def test_turns_alternate_instruction_and_response_sections_and_end_open():
    prompt = chat_prompt(
        [user("Name a color."), {"role": "assistant", "content": "Red."}, user("More")]
    )
    assert prompt == (
        f"{PROMPT_PREAMBLE}\n\n### Instruction:\nName a color.\n\n"
        "### Response:\nRed.\n\n### Instruction:\nMore\n\n### Response:\n"
    )


def test_a_system_message_replaces_the_preamble():
    prompt = chat_prompt([{"role": "system", "content": "Be brief."}, user("Hi")])
    assert prompt.startswith("Be brief.\n\n### Instruction:\nHi")
    assert PROMPT_PREAMBLE not in prompt


@pytest.mark.parametrize(
    ("messages", "error", "fragment"),
    [
        ([], ValueError, "no user message"),
        ([{"role": "assistant", "content": "Hi"}], ValueError, "no user message"),
        ([user("a"), {"role": "assistant", "content": "b"}], ValueError, "last"),
        ([{"role": "bot", "content": "x"}, user("a")], ValueError, "role 'bot'"),
        (
            [user("a"), {"role": "system", "content": "x"}, user("b")],
            ValueError,
            "first",
        ),
        ([{"role": "user", "content": 3}], ValueError, "string 'content'"),
        ("hello", TypeError, "list"),
        (["hello"], TypeError, "message 0 must be a dict"),
    ],
)
def test_malformed_messages_are_refused_with_the_reason(messages, error, fragment):
    with pytest.raises(error, match=fragment):
        chat_prompt(messages)


# ---- TextDecoder ----


@settings(max_examples=200, deadline=None)
@given(TEXT)
def test_streamed_text_equals_decoding_all_tokens(text):
    ids = TOKENIZER.encode_ordinary(text)
    decoder = TextDecoder(TOKENIZER)
    assert decode_all(decoder, ids) == TOKENIZER.decode(ids) == text
    assert decoder.text == text and not decoder.stopped


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, TOKENIZER.n_vocab - 2), max_size=12))
def test_arbitrary_tokens_stream_as_their_decoding_with_replacement(ids):
    # Any token sequence, including ones that cut characters for good
    assert decode_all(TextDecoder(TOKENIZER), ids) == TOKENIZER.decode(ids)


@settings(max_examples=300, deadline=None)
@given(
    TEXT, st.lists(st.sampled_from(["###", "### Instruction", "😀", "b:"]), max_size=2)
)
def test_output_is_the_decoded_tokens_cut_at_the_first_stop_string(text, stop):
    ids = TOKENIZER.encode_ordinary(text)
    decoder = TextDecoder(TOKENIZER, stop)
    released = decode_all(decoder, ids)
    assert released == decoder.text == cut_at_first_stop(text, stop)
    assert decoder.stopped == any(s in text for s in stop)


@settings(max_examples=100, deadline=None)
@given(TEXT)
def test_no_released_piece_ends_inside_a_character(text):
    for piece in map(TextDecoder(TOKENIZER).push, TOKENIZER.encode_ordinary(text)):
        assert "\ufffd" not in piece


def test_a_character_split_across_tokens_is_released_whole():
    ids = TOKENIZER.encode_ordinary("😀")
    # GPT-2 splits the emoji's four bytes
    assert len(ids) > 1
    decoder = TextDecoder(TOKENIZER)
    pieces = [decoder.push(i) for i in ids]
    assert pieces[:-1] == [""] * (len(ids) - 1) and pieces[-1] == "😀"


def test_a_stop_string_split_across_tokens_is_never_shown():
    ids = TOKENIZER.encode_ordinary("Paris.\n\n### Instruction:\nAnd Rome?")
    decoder = TextDecoder(TOKENIZER, ["### Instruction:"])
    pieces = [decoder.push(i) for i in ids]
    assert "".join(pieces) == "Paris.\n\n" and decoder.stopped
    assert all("#" not in piece for piece in pieces)
    assert decoder.push(ids[0]) == "" and decoder.finish() == ""


def test_a_held_back_prefix_is_released_when_no_stop_follows():
    decoder = TextDecoder(TOKENIZER, ["### Instruction"])
    held = decoder.push(TOKENIZER.encode_ordinary("##")[0])
    assert held == "" and decoder.finish() == "##" and not decoder.stopped


def test_an_incomplete_character_at_the_end_becomes_a_replacement_character():
    first = TOKENIZER.encode_ordinary("😀")[0]
    decoder = TextDecoder(TOKENIZER)
    assert decoder.push(first) == ""
    assert decoder.finish() == TOKENIZER.decode([first])


@pytest.mark.parametrize(
    ("stop", "error"), [("###", TypeError), ([""], ValueError), ([3], TypeError)]
)
def test_bad_stop_strings_are_refused(stop, error):
    with pytest.raises(error):
        TextDecoder(TOKENIZER, stop)


# ---- fit_context ----


@given(
    st.lists(st.integers(0, 50_000), max_size=60),
    st.integers(2, 40),
    st.integers(0, 40),
)
def test_fit_context_keeps_the_latest_tokens_that_leave_room(ids, context, new):
    if new >= context:
        with pytest.raises(ValueError, match="no room"):
            fit_context(ids, context, new)
        return
    kept = fit_context(ids, context, new)
    assert len(kept) + new <= context
    assert kept == ids[len(ids) - len(kept) :]
    assert len(kept) == min(len(ids), context - new)


@pytest.mark.parametrize(("context", "new"), [(-1, 0), (8, -1), (8, 2.5), (True, 1)])
def test_fit_context_refuses_bad_sizes(context, new):
    with pytest.raises(ValueError):
        fit_context([1, 2], context, new)


# ---- fit_messages ----

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    user("Name a color."),
    {"role": "assistant", "content": "Red."},
    user("Another one, please, and say why you chose it."),
    {"role": "assistant", "content": "Blue, because the sky is blue."},
    user("And a third?"),
]


def test_fit_messages_drops_the_oldest_whole_turns_and_keeps_the_system_message():
    whole = TOKENIZER.encode_ordinary(chat_prompt(CONVERSATION))
    assert fit_messages(CONVERSATION, TOKENIZER, len(whole)) == (whole, 0)
    ids, dropped = fit_messages(CONVERSATION, TOKENIZER, len(whole) - 1)
    assert dropped == 2
    assert ids == TOKENIZER.encode_ordinary(
        chat_prompt([CONVERSATION[0], *CONVERSATION[3:]])
    )
    last_only = TOKENIZER.encode_ordinary(
        chat_prompt([CONVERSATION[0], user("And a third?")])
    )
    assert fit_messages(CONVERSATION, TOKENIZER, len(last_only)) == (last_only, 4)


def test_fit_messages_refuses_when_the_last_message_alone_does_not_fit():
    with pytest.raises(ContextOverflowError, match="more than the 10"):
        fit_messages(CONVERSATION, TOKENIZER, 10)


# ---- ChatSession ----


@pytest.fixture(scope="module")
def gpt2_sized_model():
    """A tiny random model with GPT-2's vocabulary, so it works with its tokenizer."""
    torch.manual_seed(0)
    cfg = GPTConfig(
        vocab_size=TOKENIZER.n_vocab,
        context_length=96,
        emb_dim=16,
        n_heads=2,
        n_layers=1,
        drop_rate=0.0,
    )
    return GPTModel(cfg).eval()


def test_a_reply_is_the_greedy_continuation_of_the_chat_prompt(gpt2_sized_model):
    session = ChatSession(gpt2_sized_model, TOKENIZER, max_new_tokens=8, stop=())
    reply = session.send("Name a color.")
    ids = TOKENIZER.encode_ordinary(chat_prompt([user("Name a color.")]))
    out = generate(gpt2_sized_model, torch.tensor([ids]), 8, eos_id=TOKENIZER.eot_token)
    new = out[0, len(ids) :].tolist()
    if TOKENIZER.eot_token in new:
        new = new[: new.index(TOKENIZER.eot_token)]
    assert reply == TOKENIZER.decode(new).strip()
    assert session.messages == [
        user("Name a color."),
        {"role": "assistant", "content": reply},
    ]


def test_streamed_pieces_join_to_the_recorded_reply(gpt2_sized_model):
    session = ChatSession(gpt2_sized_model, TOKENIZER, max_new_tokens=6)
    pieces = list(session.stream("Hello"))
    assert "".join(pieces).strip() == session.messages[-1]["content"]


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.integers(1, 12), min_size=1, max_size=6))
def test_old_turns_are_dropped_whole_until_the_prompt_fits(gpt2_sized_model, words):
    session = ChatSession(gpt2_sized_model, TOKENIZER, max_new_tokens=20)
    for count in words:
        session.messages += [
            user("word " * count),
            {"role": "assistant", "content": "ok"},
        ]
    ids = session.prompt_ids("What now?")
    room = 96 - 20
    assert len(ids) == session.prompt_length <= room
    # whole (user, assistant) exchanges
    assert session.dropped % 2 == 0
    kept = session.messages[session.dropped :] + [user("What now?")]
    assert ids == TOKENIZER.encode_ordinary(chat_prompt(kept))
    # one more exchange would not have fitted
    if session.dropped:
        more = session.messages[session.dropped - 2 :] + [user("What now?")]
        assert len(TOKENIZER.encode_ordinary(chat_prompt(more))) > room


def test_a_message_that_cannot_fit_alone_is_a_clear_error(gpt2_sized_model):
    session = ChatSession(gpt2_sized_model, TOKENIZER, max_new_tokens=20)
    with pytest.raises(ContextOverflowError, match="shorter message"):
        session.send("word " * 100)
    assert session.messages == []


def test_seeded_sampling_repeats(gpt2_sized_model):
    def reply(seed):
        session = ChatSession(
            gpt2_sized_model, TOKENIZER, temperature=1.0, seed=seed, max_new_tokens=8
        )
        return session.send("Hi")

    assert reply(3) == reply(3)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"max_new_tokens": 0}, ValueError),
        ({"max_new_tokens": 96}, ValueError),
        ({"temperature": -1.0}, ValueError),
        ({"top_p": 0.0}, ValueError),
    ],
)
def test_bad_session_options_are_refused(gpt2_sized_model, options, error):
    with pytest.raises(error):
        ChatSession(gpt2_sized_model, TOKENIZER, **options)


def test_an_empty_message_is_refused_before_generating(gpt2_sized_model):
    session = ChatSession(gpt2_sized_model, TOKENIZER)
    with pytest.raises(ValueError, match="empty"):
        session.stream("   ")


def test_the_chat_stops_at_chapter_7s_section_headers_and_end_of_text():
    assert {"### Instruction:", "### Response:", "<|endoftext|>"} <= set(CHAT_STOP)
