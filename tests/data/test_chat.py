import pytest

from flightmind.contracts import IGNORE_INDEX
from flightmind.data.chat import (
    ChatTemplate,
    Message,
    parse_action,
    record_messages,
    reference_action,
)
from flightmind.data.commands import generate_commands
from flightmind.data.documents import BadLine
from flightmind.contracts import load_tokenizer

SYSTEM, USER, ASSISTANT, END = 1, 2, 3, 4  # the pretraining tokenizer's special-token ids


@pytest.fixture(scope="module")
def template(chat_tokenizer_path):
    return ChatTemplate(load_tokenizer(chat_tokenizer_path))


def ids(template, text):
    return template.tokenizer.encode(text, add_special_tokens=False).ids


def test_multi_turn_layout_and_labels_token_by_token(template):
    messages = [
        Message("system", "You are FlightMind."),
        Message("user", "turn heading three six zero"),
        Message("assistant", '{"action": "heading", "value": 360}\nRoger, turning to heading 360.'),
        Message("user", "squawk seven seven zero zero"),
        Message("assistant", '{"action": "squawk", "value": "7700"}'),
    ]
    s, u1, a1, u2, a2 = (ids(template, m.content) for m in messages)
    tokens, labels = template.encode(messages)
    assert tokens == [SYSTEM, *s, END, USER, *u1, END, ASSISTANT, *a1, END, USER, *u2, END, ASSISTANT, *a2, END]
    masked = IGNORE_INDEX
    assert labels == (
        [masked] * (len(s) + 2) + [masked] * (len(u1) + 2)
        + [masked, *a1, END]
        + [masked] * (len(u2) + 2)
        + [masked, *a2, END]
    )
    # Each marker is one token, and decoding gives the spec's template back.
    decoded = template.tokenizer.decode(tokens, skip_special_tokens=False)
    assert decoded.startswith("<|system|>You are FlightMind.<|end|><|user|>turn heading three six zero<|end|><|assistant|>{")


def test_no_label_outside_assistant_content_and_its_end(template):
    for record in generate_commands(200, seed=3):
        messages = record_messages(record)
        tokens, labels = template.encode(messages)
        assert len(tokens) == len(labels)
        inside_assistant = False
        for token, label in zip(tokens, labels):
            if token in (SYSTEM, USER, ASSISTANT):
                inside_assistant = token == ASSISTANT
                assert label == IGNORE_INDEX  # markers are given, never learned
            elif inside_assistant:
                assert label == token  # content and the closing <|end|>
                inside_assistant = token != END
            else:
                assert label == IGNORE_INDEX
        answer = [t for t, label in zip(tokens, labels) if label != IGNORE_INDEX]
        assert template.tokenizer.decode(answer, skip_special_tokens=True) == messages[-1].content


def test_prompt_is_every_turn_before_the_answer_then_the_assistant_marker(template):
    messages = record_messages(generate_commands(1, seed=0)[0])
    prompt = template.prompt(messages)
    tokens, _ = template.encode(messages)
    assert prompt == tokens[: len(prompt)] and prompt[-1] == ASSISTANT
    assert tokens[len(prompt):] == [*ids(template, messages[-1].content), END]


def test_prompt_response_pairs_and_default_system_prompt():
    assert record_messages({"prompt": "gear down", "response": "ok"}) == [Message("user", "gear down"), Message("assistant", "ok")]
    assert record_messages({"prompt": "p", "response": "r", "system": "s"})[0] == Message("system", "s")
    with_default = record_messages({"prompt": "p", "response": "r"}, system_prompt="be brief")
    assert with_default[0] == Message("system", "be brief") and len(with_default) == 3


@pytest.mark.parametrize(
    ("record", "reason", "detail"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "no_assistant", "no assistant turn"),
        ({"messages": [{"role": "pilot", "content": "hi"}, {"role": "assistant", "content": "x"}]}, "unknown_role", "message 1 has role 'pilot'"),
        ({"messages": [{"role": "user", "content": 7}, {"role": "assistant", "content": "x"}]}, "not_string", "message 1: 'content' is a JSON number"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant"}]}, "missing_key", "message 2: no 'content' key"),
        ({"messages": [{"role": "user", "content": "say <|end|>"}, {"role": "assistant", "content": "x"}]}, "marker_in_content", "special token <|end|>"),
        ({"messages": []}, "not_chat", "non-empty array"),
        ({"text": "plain"}, "not_chat", "neither 'messages' nor 'prompt'/'response'"),
        ({"prompt": "p", "response": None}, "not_string", "'response' is a JSON null"),
    ],
)
def test_bad_records_say_what_is_wrong(record, reason, detail):
    with pytest.raises(BadLine) as caught:
        record_messages(record)
    assert caught.value.reason == reason and detail in caught.value.detail


def test_actions_are_parsed_not_string_compared():
    reference = reference_action([Message("user", "x"), Message("assistant", '{"action": "heading", "value": 360}\nRoger.')])
    assert reference == {"action": "heading", "value": 360}
    assert parse_action('{"value": 360,   "action":"heading"}\nanything') == reference  # key order, spacing
    assert parse_action('{"action": "heading", "value": 360.0}') == reference  # the same number
    assert parse_action('{"action": "heading", "value": 36}') != reference
    assert parse_action('{"action": "heading", "value": 360') is None  # cut off
    assert parse_action("Roger, turning to heading 360.") is None
    assert reference_action([Message("user", "x"), Message("assistant", "no json here")]) is None


def test_a_tokenizer_without_the_chat_markers_is_refused_by_name():
    from tokenizers import Tokenizer, models

    from flightmind.errors import FlightMindError

    bare = Tokenizer(models.BPE())
    bare.add_special_tokens(["<|endoftext|>", "<|user|>"])
    with pytest.raises(FlightMindError, match=r"tok\.json has no <\|system\|>, <\|assistant\|>, <\|end\|> token"):
        ChatTemplate(bare, source="tok.json")
