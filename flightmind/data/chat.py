"""Chat records, the chat template and the assistant-only loss mask.

A record is ``{"messages": [{"role": "system"|"user"|"assistant", "content": "…"}, …]}`` (any number
of turns) or a pair ``{"prompt": "…", "response": "…"}`` (with an optional ``"system"``). Each turn
becomes its role marker, its content and ``<|end|>``; the turns follow one another directly::

    <|system|>You are FlightMind, an aviation AI copilot for AIDA.<|end|><|user|>turn heading three
    six zero<|end|><|assistant|>{"action": "heading", "value": 360}
    Roger, turning to heading 360.<|end|>

The markers are single special tokens of the pretraining tokenizer (ids 1–4), so no text can be
mistaken for one. Labels are ``IGNORE_INDEX`` everywhere except on the content of every assistant
turn and its closing ``<|end|>``: the model learns to answer and to stop, never to write the user's
part. Labels line up with the tokens; shifting by one for next-token prediction happens when
batching.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from flightmind.data.documents import BadLine, SkipCounts, document_text, iter_jsonl, skip_or_raise
from flightmind.contracts import ASSISTANT, END, IGNORE_INDEX, SPECIAL_TOKENS, SYSTEM, USER
from flightmind.errors import FlightMindError

ROLES = ("system", "user", "assistant")
ROLE_MARKERS = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}
DEFAULT_SYSTEM_PROMPT = "You are FlightMind, an aviation AI copilot for AIDA."

# Reasons a chat record is skipped (after documents.py's not_json and invalid_utf8 for the line itself).
CHAT_SKIP_REASONS = (
    "not_json",
    "invalid_utf8",
    "not_chat",
    "unknown_role",
    "missing_key",
    "not_string",
    "control_chars",
    "empty",
    "marker_in_content",
    "no_assistant",
)


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str


def _content(obj: dict, key: str, where: str) -> str:
    try:
        text = document_text(obj, key)
    except BadLine as bad:
        raise BadLine(bad.reason, f"{where}: {bad.detail}") from None
    if marker := next((token for token in SPECIAL_TOKENS if token in text), None):
        raise BadLine("marker_in_content", f"{where}: {key!r} contains the special token {marker}")
    return text


def record_messages(obj: dict, system_prompt: str | None = None) -> list[Message]:
    """The turns of one chat record, or BadLine naming what is wrong with it.

    ``system_prompt`` is put first when the record has no system turn of its own.
    """
    if "messages" in obj:
        turns = obj["messages"]
        if not isinstance(turns, list) or not turns:
            raise BadLine("not_chat", "'messages' must be a non-empty array of {\"role\", \"content\"} objects")
        messages = []
        for number, turn in enumerate(turns, start=1):
            where = f"message {number}"
            if not isinstance(turn, dict):
                raise BadLine("not_chat", f"{where} is not an object")
            role = turn.get("role")
            if role not in ROLES:
                raise BadLine("unknown_role", f"{where} has role {role!r}; roles are {', '.join(ROLES)}")
            messages.append(Message(role, _content(turn, "content", where)))
    elif "prompt" in obj or "response" in obj:
        messages = [Message("user", _content(obj, "prompt", "pair")), Message("assistant", _content(obj, "response", "pair"))]
        if "system" in obj:
            messages.insert(0, Message("system", _content(obj, "system", "pair")))
    else:
        keys = ", ".join(map(repr, list(obj)[:8])) or "none"
        raise BadLine("not_chat", f"neither 'messages' nor 'prompt'/'response' (keys: {keys})")
    if not any(m.role == "assistant" for m in messages):
        raise BadLine("no_assistant", "no assistant turn, so nothing to learn")
    if system_prompt and messages[0].role != "system":
        messages.insert(0, Message("system", system_prompt))
    return messages


def read_chat_records(
    path: str | Path, *, system_prompt: str | None = None, strict: bool = False, counts: SkipCounts | None = None
) -> Iterator[tuple[int, list[Message]]]:
    """(line number, messages) of each usable record of a chat JSONL file; a bad record is counted
    under one of CHAT_SKIP_REASONS, or with ``strict`` raised as an error naming ``file:line``."""
    for line_no, obj in iter_jsonl(path, strict=strict, counts=counts):
        try:
            messages = record_messages(obj, system_prompt)
        except BadLine as bad:
            skip_or_raise(bad, path, line_no, strict, counts)
            continue
        yield line_no, messages


def reference_action(messages: Sequence[Message]) -> dict | None:
    """The JSON action that ends the conversation: the first line of a final assistant turn, if it
    is a JSON object with an ``"action"`` key (the spec's command format); else None."""
    if not messages or messages[-1].role != "assistant":
        return None
    return parse_action(messages[-1].content)


def parse_action(text: str) -> dict | None:
    """The JSON object on the first line of ``text`` if it has an ``"action"`` key, else None."""
    try:
        value = json.loads(text.split("\n", 1)[0])
    except ValueError:
        return None
    return value if isinstance(value, dict) and "action" in value else None


class ChatTemplate:
    """Turns messages into token ids and labels with one tokenizer's special-token ids."""

    def __init__(self, tokenizer: Tokenizer, source: str = "the tokenizer") -> None:
        missing = [marker for marker in (*ROLE_MARKERS.values(), END) if tokenizer.token_to_id(marker) is None]
        if missing:
            raise FlightMindError(
                f"{source} has no {', '.join(missing)} token(s): fine-tune with the tokenizer of the pretraining run "
                "(`flightmind prepare` trains one with every chat marker as a single token)"
            )
        self.tokenizer = tokenizer
        self.role_ids = {role: tokenizer.token_to_id(marker) for role, marker in ROLE_MARKERS.items()}
        self.end_id = tokenizer.token_to_id(END)

    def encode_batch(self, conversations: Sequence[Sequence[Message]]) -> list[tuple[list[int], list[int]]]:
        """(tokens, labels) of each conversation; all contents go through the tokenizer at once."""
        contents = [m.content for messages in conversations for m in messages]
        encoded = iter(self.tokenizer.encode_batch_fast(contents, add_special_tokens=False)) if contents else iter(())
        results = []
        for messages in conversations:
            tokens: list[int] = []
            labels: list[int] = []
            for message in messages:
                content = next(encoded).ids
                turn = [self.role_ids[message.role], *content, self.end_id]
                tokens += turn
                if message.role == "assistant":
                    labels += [IGNORE_INDEX, *content, self.end_id]
                else:
                    labels += [IGNORE_INDEX] * len(turn)
            results.append((tokens, labels))
        return results

    def encode(self, messages: Sequence[Message]) -> tuple[list[int], list[int]]:
        return self.encode_batch([messages])[0]

    def prompt(self, messages: Sequence[Message]) -> list[int]:
        """Tokens that ask for the final assistant turn: every turn before it, then ``<|assistant|>``."""
        if messages and messages[-1].role == "assistant":
            messages = messages[:-1]
        tokens = self.encode(messages)[0] if messages else []
        return tokens + [self.role_ids["assistant"]]
