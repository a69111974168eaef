"""flightmind.atomic.write_jsonl: the whole file or the old one, never half of it."""

import json

import pytest

from flightmind.atomic import write_jsonl


def test_writes_unescaped_utf8_lines_and_creates_parents(tmp_path):
    path = write_jsonl(tmp_path / "a" / "b" / "x.jsonl", [{"text": "Zürich\nnext"}, {"n": 1}])
    assert path.read_bytes() == '{"text": "Zürich\\nnext"}\n{"n": 1}\n'.encode("utf-8")


def test_failed_write_keeps_the_old_file(tmp_path):
    path = write_jsonl(tmp_path / "x" / "a.jsonl", [{"id": "1", "source": "s", "text": "old"}])
    with pytest.raises(TypeError):
        write_jsonl(path, [{"id": "2", "source": "s", "text": "new"}, {"id": "3", "text": object()}])
    assert json.loads(path.read_text()) == {"id": "1", "source": "s", "text": "old"}
    assert [p.name for p in path.parent.iterdir()] == ["a.jsonl"]
