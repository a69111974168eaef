"""Reading JSONL files: one JSON object per line, each bad line named by file and line number.

Two layers. The low one (`read_lines`, `jsonl_objects`, `iter_jsonl`, `skip_or_raise`) reads JSON
objects of any shape, for every JSONL reader in FlightMind (pretraining text, chat data, evaluation
sets). The high one (`documents`, `iter_documents`) checks that an object holds usable text.

Files are read in binary mode, line by line, so memory does not depend on file size, and so that
a line of broken UTF-8 is one skipped line instead of an exception that ends the whole file.
A bad line is either skipped and counted under one of `SKIP_REASONS`, or, with `strict=True`,
raised as a `FlightMindError` naming `file:line`. Blank lines are not documents and pass silently.
"""

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from flightmind.errors import FlightMindError

SKIP_REASONS = ("not_json", "missing_key", "not_string", "invalid_utf8", "control_chars", "empty")

UTF8_BOM = b"\xef\xbb\xbf"

# Raw tabs and other control bytes inside JSON strings are accepted here and judged afterwards as
# text, so that a raw NUL is reported as a control character rather than as broken JSON.
_JSON_DECODER = json.JSONDecoder(strict=False)
# Unicode category Cc (C0, DEL, C1) except the whitespace that real text uses.
_CONTROL_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# A JSON escape like "\udc80" decodes to half a surrogate pair, which has no UTF-8 encoding.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class BadLine(Exception):
    """A line that cannot be used: `reason` is a key to count it under, `detail` says what is wrong."""

    def __init__(self, reason: str, detail: str):
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


@dataclass
class SkipCounts:
    """Bad lines per reason; merge the counts of chunks or files with `merge`."""

    by_reason: Counter = field(default_factory=Counter)

    def add(self, reason: str) -> None:
        self.by_reason[reason] += 1

    def merge(self, other: "SkipCounts") -> None:
        self.by_reason.update(other.by_reason)

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())

    def as_dict(self) -> dict[str, int]:
        """Every reason of SKIP_REASONS (zeros included), then any other reason a caller counted."""
        reasons = list(SKIP_REASONS) + sorted(set(self.by_reason) - set(SKIP_REASONS))
        return {reason: self.by_reason[reason] for reason in reasons}


@dataclass(frozen=True, slots=True)
class Document:
    line: int  # 1-based line number in its file
    text: str


def skip_or_raise(bad: BadLine, source: str | Path, line_no: int, strict: bool, counts: SkipCounts | None) -> None:
    if strict:
        raise FlightMindError(f"{source}:{line_no}: {bad.detail}; fix the line or run without --strict to skip bad lines")
    if counts is not None:
        counts.add(bad.reason)


def numbered_lines(raw_lines: Iterable[bytes], first_line_no: int = 1) -> Iterator[tuple[int, bytes]]:
    """Number raw lines from `first_line_no`, dropping blank lines and a UTF-8 byte order mark on line 1."""
    for line_no, raw in enumerate(raw_lines, start=first_line_no):
        if line_no == 1 and raw.startswith(UTF8_BOM):
            raw = raw[len(UTF8_BOM):]
        if raw.strip():
            yield line_no, raw


def read_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes) of each non-blank line of a file, streamed."""
    try:
        file = open(path, "rb")
    except OSError as e:
        raise FlightMindError(f"cannot read input file {path}: {e.strerror or e}") from None
    with file:
        try:
            yield from numbered_lines(file)
        except OSError as e:
            raise FlightMindError(f"cannot read input file {path}: {e.strerror or e}") from None


def _json_type_name(value) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def parse_json_object(raw: bytes) -> dict:
    """Decode one line into a JSON object, or raise BadLine (invalid_utf8 or not_json)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadLine("invalid_utf8", f"byte {e.start + 1} ({raw[e.start:e.start + 1]!r}) is not valid UTF-8") from None
    try:
        value = _JSON_DECODER.decode(text)
    except json.JSONDecodeError as e:
        raise BadLine("not_json", f"not valid JSON ({e.msg} at column {e.colno})") from None
    except (ValueError, RecursionError) as e:  # e.g. a 5,000-digit number, or arrays nested too deep
        raise BadLine("not_json", f"not valid JSON ({type(e).__name__}: {str(e)[:80]})") from None
    if not isinstance(value, dict):
        raise BadLine("not_json", f"a JSON {_json_type_name(value)}, not an object")
    return value


def document_text(obj: dict, text_key: str) -> str:
    """The usable text under `text_key`, or raise BadLine saying why there is none."""
    if text_key not in obj:
        keys = ", ".join(map(repr, list(obj)[:8])) or "none"
        raise BadLine("missing_key", f"no {text_key!r} key (keys: {keys})")
    text = obj[text_key]
    if not isinstance(text, str):
        raise BadLine("not_string", f"{text_key!r} is a JSON {_json_type_name(text)}, not a string")
    if bad := _CONTROL_CHAR.search(text):
        raise BadLine("control_chars", f"{text_key!r} holds control character U+{ord(bad.group()):04X} at character {bad.start()}")
    if bad := _LONE_SURROGATE.search(text):
        raise BadLine("invalid_utf8", f"{text_key!r} holds an unpaired surrogate \\u{ord(bad.group()):04x}, which has no UTF-8 encoding")
    if not text.strip():
        raise BadLine("empty", f"{text_key!r} is empty or only whitespace")
    return text


def jsonl_objects(
    lines: Iterable[tuple[int, bytes]], *, source: str | Path, strict: bool = False, counts: SkipCounts | None = None
) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each numbered line that holds a JSON object."""
    for line_no, raw in lines:
        try:
            obj = parse_json_object(raw)
        except BadLine as bad:
            skip_or_raise(bad, source, line_no, strict, counts)
            continue
        yield line_no, obj


def iter_jsonl(path: str | Path, *, strict: bool = False, counts: SkipCounts | None = None) -> Iterator[tuple[int, dict]]:
    return jsonl_objects(read_lines(path), source=path, strict=strict, counts=counts)


def documents(
    lines: Iterable[tuple[int, bytes]],
    *,
    source: str | Path,
    text_key: str = "text",
    strict: bool = False,
    counts: SkipCounts | None = None,
) -> Iterator[Document]:
    """The valid documents among numbered lines (from `read_lines` or `numbered_lines`)."""
    for line_no, obj in jsonl_objects(lines, source=source, strict=strict, counts=counts):
        try:
            text = document_text(obj, text_key)
        except BadLine as bad:
            skip_or_raise(bad, source, line_no, strict, counts)
            continue
        yield Document(line_no, text)


def iter_documents(
    path: str | Path, *, text_key: str = "text", strict: bool = False, counts: SkipCounts | None = None
) -> Iterator[Document]:
    return documents(read_lines(path), source=path, text_key=text_key, strict=strict, counts=counts)
