"""The `llm` command (llm.cli, run as `python -m llm`): every subcommand's happy
path with tiny models, every kind of mistake as one line on stderr with the
right exit status, Ctrl-C, and the server started and stopped."""

import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import torch

from llm.chat import ChatSession
from llm.checkpoint import load_model, save_checkpoint
from llm.classify import SequenceClassifier, save_classifier, spam_classifier_path
from llm.cli import build_parser, main
from llm.generate import generate
from llm.instruct import instruct_model_path
from llm.model import GPTConfig, GPTModel
from llm.pretrain import base_model_path
from llm.tokenizer import gpt2_tokenizer

TOKENIZER = gpt2_tokenizer()
SUBCOMMANDS = ("generate", "chat", "classify", "serve", "pretrain", "finetune")
# Small enough to load and run in well under a second, with GPT-2's vocabulary
# (the command line always uses GPT-2's tokenizer) and room for a chat prompt
TINY_GPT2_CONFIG = GPTConfig(
    vocab_size=TOKENIZER.n_vocab,
    context_length=128,
    emb_dim=16,
    n_heads=2,
    n_layers=1,
    drop_rate=0.0,
)


def tiny_model(seed: int = 0) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(TINY_GPT2_CONFIG).eval()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A tiny language model checkpoint."""
    return save_checkpoint(tiny_model(), tmp_path_factory.mktemp("m") / "tiny.st")


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory):
    """A tiny (untrained) spam classifier checkpoint."""
    classifier = SequenceClassifier(tiny_model(1)).eval()
    return save_classifier(classifier, tmp_path_factory.mktemp("c") / "spam.st")


def llm(*arguments, stdin: str | None = None, timeout: float = 120):
    """Run `python -m llm ARGUMENTS` in a fresh process (with this test's private
    cache in its environment)."""
    return subprocess.run(
        [sys.executable, "-m", "llm", *map(str, arguments)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "80"},
    )


def assert_one_line_error(stderr: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "error:" in lines[0] and "Traceback" not in stderr


def greedy_text(model, prompt_ids: list[int], max_new_tokens: int) -> str:
    """What greedy decoding appends to `prompt_ids`, up to end-of-text."""
    out = generate(model, torch.tensor([prompt_ids]), max_new_tokens)
    new = out[0, len(prompt_ids) :].tolist()
    if TOKENIZER.eot_token in new:
        new = new[: new.index(TOKENIZER.eot_token)]
    return TOKENIZER.decode(new)


# ---- help ----


def test_help_lists_every_subcommand():
    done = llm("--help")
    assert done.returncode == 0 and done.stderr == ""
    for name in SUBCOMMANDS:
        assert f"    {name} " in done.stdout


def test_every_option_of_every_subcommand_is_explained():
    parser = build_parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    assert set(commands.choices) == set(SUBCOMMANDS)
    for name, subparser in commands.choices.items():
        assert subparser.description, name
        for action in subparser._actions:
            assert action.help and action.help.strip(), (name, action.dest)


# ---- generate ----


def test_generate_prints_the_greedy_continuation(model_file):
    done = llm("generate", "Every effort moves you", "--model", model_file,
               "--max-new-tokens", 6)  # fmt: skip
    assert done.returncode == 0, done.stderr
    ids = TOKENIZER.encode_ordinary("Every effort moves you")
    assert done.stdout == greedy_text(tiny_model(), ids, 6) + "\n"


def test_generate_reads_the_prompt_from_stdin_and_samples_with_the_seed(model_file):
    done = llm("generate", "-", "--model", model_file, "--max-new-tokens", 8,
               "--temperature", 1.0, "--seed", 5, stdin="Hello there")  # fmt: skip
    assert done.returncode == 0, done.stderr
    ids = torch.tensor([TOKENIZER.encode_ordinary("Hello there")])
    generator = torch.Generator().manual_seed(5)
    out = generate(tiny_model(), ids, 8, temperature=1.0, generator=generator)
    new = out[0, ids.shape[1] :].tolist()
    # the command stops at end-of-text
    if TOKENIZER.eot_token in new:
        new = new[: new.index(TOKENIZER.eot_token)]
    assert done.stdout == TOKENIZER.decode(new) + "\n"


def test_generate_and_chat_default_to_the_cached_book_models(private_cache):
    save_checkpoint(tiny_model(), base_model_path())
    save_checkpoint(tiny_model(), instruct_model_path())
    assert llm("generate", "Hi", "--max-new-tokens", 2).returncode == 0
    assert llm("chat", "--max-new-tokens", 2, stdin="Hi\n").returncode == 0


# ---- chat ----


def test_chat_answers_two_turns_from_stdin_as_the_session_does(model_file):
    messages = ["Name a primary color.", "And another one?"]
    done = llm("chat", "--model", model_file, "--max-new-tokens", 10,
               stdin="\n".join(messages) + "\n")  # fmt: skip
    assert done.returncode == 0, done.stderr
    session = ChatSession(tiny_model(), TOKENIZER, max_new_tokens=10)
    expected = "".join("".join(session.stream(m)) + "\n" for m in messages)
    assert done.stdout == expected
    assert len(session.messages) == 4


def test_chat_reports_a_message_too_long_and_answers_the_next(model_file):
    stdin = "word " * 200 + "\nHi\n"
    done = llm("chat", "--model", model_file, "--max-new-tokens", 4, stdin=stdin)
    assert done.returncode == 1
    assert "shorter message" in done.stderr and "Traceback" not in done.stderr
    # the second message was answered
    assert done.stdout.count("\n") == 1


def test_ctrl_c_ends_the_chat_quietly_with_status_130(model_file):
    chat = subprocess.Popen(
        [sys.executable, "-m", "llm", "chat", "--model", str(model_file),
         "--max-new-tokens", "2"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    chat.stdin.write("Hi\n")
    chat.stdin.flush()
    # the reply: the chat now waits for the next line
    chat.stdout.readline()
    chat.send_signal(signal.SIGINT)
    # stdin stays open, so that only the interrupt can end the chat (closing it
    # first would let the chat end at end-of-input, with status 0)
    assert chat.wait(timeout=60) == 130
    stderr = chat.stderr.read()
    chat.stdin.close()
    chat.stdout.close()
    chat.stderr.close()
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr


# ---- classify ----


def test_classify_labels_each_text_from_arguments_or_stdin(
    classifier_file, monkeypatch, capsys
):
    texts = ["WINNER! Claim your prize now", "See you at lunch?"]
    from_args = llm("classify", *texts, "--model", classifier_file)
    assert from_args.returncode == 0, from_args.stderr
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(texts) + "\n\n"))
    assert main(["classify", "--model", str(classifier_file)]) == 0
    assert capsys.readouterr().out == from_args.stdout
    lines = from_args.stdout.splitlines()
    assert [line.split("\t")[2] for line in lines] == texts
    for line in lines:
        label, probability, _ = line.split("\t")
        assert label in ("ham", "spam") and 0.5 <= float(probability) <= 1.0


def test_classify_uses_the_cached_spam_classifier_by_default(classifier_file):
    spam_classifier_path().parent.mkdir(parents=True)
    spam_classifier_path().write_bytes(classifier_file.read_bytes())
    done = llm("classify", "Free entry in a weekly draw")
    assert done.returncode == 0 and done.stdout.count("\t") == 2


# ---- pretrain and finetune ----


def test_pretrain_runs_a_few_steps_with_a_progress_bar(tmp_path):
    out = tmp_path / "base.st"
    done = llm("pretrain", "--max-steps", 1, "--batch-size", 2, "--eval-every", 1,
               "--eval-batches", 1, "--out", out)  # fmt: skip
    assert done.returncode == 0, done.stderr
    # the bar
    assert "pretraining" in done.stderr and "1/1" in done.stderr
    assert done.stdout.splitlines()[-1] == f"saved {out}"
    # chapter 5's configuration
    assert load_model(out).cfg.n_layers == 4


def test_finetune_starts_from_any_checkpoint_and_saves_where_asked(
    model_file, tmp_path
):
    out = tmp_path / "tuned.st"
    done = llm("finetune", "--base", model_file, "--max-steps", 2, "--batch-size", 2,
               "--eval-batches", 1, "--out", out)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "finetuning" in done.stderr and "2/2" in done.stderr
    tuned, base = load_model(out), tiny_model()
    assert tuned.cfg == base.cfg
    assert not torch.equal(tuned.out_head.weight, base.out_head.weight)


# ---- mistakes: one line on stderr, status 2 for usage, 1 for failures ----


@pytest.mark.parametrize(
    ("arguments", "status", "fragment"),
    [
        ([], 2, "required: COMMAND"),
        (["frobnicate"], 2, "invalid choice"),
        (["generate", "Hi", "--temperature", "-1"], 2, "0 or more"),
        (["generate", "Hi", "--temperature", "nan"], 2, "0 or more"),
        (["generate", "   "], 2, "prompt is empty"),
        (["generate", "Hi", "--max-new-tokens", "0"], 2, "1 or more"),
        (["generate", "Hi", "--top-p", "1.5"], 2, "(0, 1]"),
        (["generate", "Hi", "--top-k", "two"], 2, "whole number"),
        (["generate", "Hi", "--device", "floppy"], 2, "unknown device"),
        (["generate", "Hi", "--model", "no-such.safetensors"], 1, "no such model"),
        (["chat", "--model", "no-such.safetensors"], 1, "no such model"),
        (["classify", ""], 2, "must not be empty"),
        (["classify", "Hi", "--model", "no-such.safetensors"], 1, "no such model"),
        (["serve", "--model", "gpt-5"], 2, "invalid choice"),
        (["serve", "--port", "-3"], 2, "1 or more"),
        (["pretrain", "--max-steps", "0"], 2, "1 or more"),
        (["finetune", "--base", "some.safetensors"], 2, "give --out"),
        (["finetune", "--base", "no-such.st", "--out", "x.st"], 1, "no such model"),
    ],
)
def test_a_mistake_is_one_line_and_the_right_status(
    arguments, status, fragment, capsys
):
    assert main(arguments) == status
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_line_error(err)
    assert fragment in err


def test_an_empty_prompt_on_stdin_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", open(os.devnull))
    assert main(["generate"]) == 2
    assert "prompt is empty" in capsys.readouterr().err


def test_a_damaged_checkpoint_is_a_runtime_error(tmp_path, model_file, capsys):
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(model_file.read_bytes()[:1000])
    assert main(["generate", "Hi", "--model", str(damaged)]) == 1
    assert_one_line_error(capsys.readouterr().err)


def test_a_language_model_is_not_a_classifier(model_file, capsys):
    assert main(["classify", "Hi", "--model", str(model_file)]) == 1
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert "not of a classifier" in err


def test_errors_reach_the_shell_through_python_m_llm(model_file):
    usage = llm("generate", "Hi", "--temperature", "-1")
    failure = llm("generate", "Hi", "--model", "no-such.safetensors")
    assert (usage.returncode, failure.returncode) == (2, 1)
    assert_one_line_error(usage.stderr)
    assert_one_line_error(failure.stderr)
    assert usage.stdout == failure.stdout == ""


def test_serve_without_its_packages_says_what_to_install(monkeypatch, capsys):
    monkeypatch.delitem(sys.modules, "llm.server", raising=False)
    # makes `import fastapi` fail
    monkeypatch.setitem(sys.modules, "fastapi", None)
    assert main(["serve"]) == 1
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert "pip install 'llm-from-scratch-book[serve]'" in err


# ---- serve (last: it starts a server) ----


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_answers_the_models_endpoint_until_interrupted(private_cache):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    # the model it preloads
    save_checkpoint(tiny_model(), instruct_model_path())
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "llm", "serve", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.communicate()[1]
            try:
                url = f"http://127.0.0.1:{port}/v1/models"
                with urllib.request.urlopen(url, timeout=5) as response:
                    assert response.status == 200
                    body = response.read().decode()
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.3)
        assert "book-instruct" in body
    finally:
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=30)
    assert "Traceback" not in stderr
