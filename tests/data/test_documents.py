import json
from pathlib import Path

import pytest

from flightmind.data.documents import SKIP_REASONS, SkipCounts, iter_documents, iter_jsonl
from flightmind.errors import FlightMindError

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
MALFORMED = SHARED_DATA / "malformed"


def bulletin(name: str) -> str:
    path = MALFORMED / name
    if not path.is_file():
        pytest.skip(f"broken weather bulletins not found at {MALFORMED} (../shared/data is absent in a fresh clone)")
    return path.read_bytes().decode("utf-8")


def jsonl_line(obj) -> bytes:
    return json.dumps(obj).encode() + b"\n"


@pytest.fixture
def mixed_file(tmp_path) -> Path:
    """One line of every kind; the comment is the line number."""
    lines = [
        jsonl_line({"id": 1, "text": "Pilot’s report: smooth ride FL350."}),  # 1 good
        b"{\"text\": \"unterminated\n",  # 2 not_json
        b"[\"an\", \"array\"]\n",  # 3 not_json (not an object)
        jsonl_line({"id": 4, "body": "text under another key"}),  # 4 missing_key
        jsonl_line({"text": 42}),  # 5 not_string
        b"{\"text\": \"caf\xe9 au lait\"}\n",  # 6 invalid_utf8 (latin-1 byte)
        jsonl_line({"text": bulletin("wx-METAR-nullbyte.txt")}),  # 7 control_chars (NUL, SOH, ETX)
        jsonl_line({"text": bulletin("wx-METAR-badchars.txt")}),  # 8 control_chars (SOH, ETX)
        jsonl_line({"text": ""}),  # 9 empty
        jsonl_line({"text": " \n\t "}),  # 10 empty
        b"\n",  # 11 blank: ignored, not counted
        b"   \r\n",  # 12 blank
        jsonl_line({"text": bulletin("wx-PIREPS-badgeom.txt")}),  # 13 good: odd geometry, clean text
        b"{\"text\": \"half a pair \\udc80\"}\n",  # 14 invalid_utf8 (lone surrogate escape)
        b"{\"text\": \"raw\ttab is fine\"}\r\n",  # 15 good (raw tab inside the string, CRLF ending)
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"".join(lines))
    return path


def test_every_bad_kind_is_counted_under_its_reason(mixed_file):
    counts = SkipCounts()
    docs = list(iter_documents(mixed_file, counts=counts))
    assert [doc.line for doc in docs] == [1, 13, 15]
    assert docs[0].text == "Pilot’s report: smooth ride FL350."
    assert docs[1].text == bulletin("wx-PIREPS-badgeom.txt")
    assert docs[2].text == "raw\ttab is fine"
    assert counts.as_dict() == {
        "not_json": 2,
        "missing_key": 1,
        "not_string": 1,
        "invalid_utf8": 2,
        "control_chars": 2,
        "empty": 2,
    }
    assert counts.total == 10


def test_strict_names_file_and_line_of_the_first_bad_line(mixed_file):
    with pytest.raises(FlightMindError, match=rf"^{mixed_file}:2: not valid JSON .*without --strict"):
        list(iter_documents(mixed_file, strict=True))


@pytest.mark.parametrize(
    "line, message",
    [
        (jsonl_line({"text": 42}), r":1: 'text' is a JSON number, not a string"),
        (jsonl_line({"body": "x"}), r":1: no 'text' key \(keys: 'body'\)"),
        (jsonl_line({"text": "a\u0000b"}), r":1: 'text' holds control character U\+0000 at character 1"),
        (b"\"just a string\"\n", r":1: a JSON string, not an object"),
        (b"{\"text\": \"\xff\"}\n", r":1: byte 11 \(b'\\xff'\) is not valid UTF-8"),
    ],
)
def test_strict_explains_the_reason(tmp_path, line, message):
    path = tmp_path / "one.jsonl"
    path.write_bytes(line)
    with pytest.raises(FlightMindError, match=message):
        list(iter_documents(path, strict=True))


def test_text_key_is_configurable(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_bytes(jsonl_line({"body": "METAR KJFK"}) + jsonl_line({"text": "no body"}))
    counts = SkipCounts()
    assert [doc.text for doc in iter_documents(path, text_key="body", counts=counts)] == ["METAR KJFK"]
    assert counts.as_dict()["missing_key"] == 1


def test_low_level_reader_yields_objects_of_any_shape(mixed_file):
    counts = SkipCounts()
    objects = list(iter_jsonl(mixed_file, counts=counts))
    # Only the JSON layer judges here: lines 2, 3 (not_json) and 6 (invalid_utf8) are skipped.
    assert [line for line, _ in objects] == [1, 4, 5, 7, 8, 9, 10, 13, 14, 15]
    assert objects[1] == (4, {"id": 4, "body": "text under another key"})
    assert counts.as_dict() == {reason: {"not_json": 2, "invalid_utf8": 1}.get(reason, 0) for reason in SKIP_REASONS}


def test_byte_order_mark_on_the_first_line_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + jsonl_line({"text": "with BOM"}))
    assert [doc.text for doc in iter_documents(path, strict=True)] == ["with BOM"]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FlightMindError, match="cannot read input file .*absent.jsonl"):
        list(iter_documents(tmp_path / "absent.jsonl"))


def test_counts_merge_per_file():
    first, second = SkipCounts(), SkipCounts()
    first.add("empty")
    first.add("not_json")
    second.add("empty")
    second.add("bad_role")  # a reason of some other reader, e.g. chat data
    first.merge(second)
    assert first.as_dict() == {
        "not_json": 1,
        "missing_key": 0,
        "not_string": 0,
        "invalid_utf8": 0,
        "control_chars": 0,
        "empty": 2,
        "bad_role": 1,
    }
    assert first.total == 4


def test_real_corpus_file_reads_with_its_one_control_character_skipped():
    path = SHARED_DATA / "aviation" / "nws_weather_products.jsonl"
    if not path.is_file():
        pytest.skip(f"real aviation text not found at {path} (../shared/data is absent in a fresh clone)")
    counts = SkipCounts()
    docs = list(iter_documents(path, counts=counts))
    assert len(docs) == 77
    assert counts.as_dict()["control_chars"] == 1
