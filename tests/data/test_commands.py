import ast
import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from flightmind.data.chat import record_messages, reference_action
from flightmind.data.commands import CATEGORIES, VALUES, generate_commands, write_commands
from flightmind.radio.phraseology import DIGITS

DIGIT = {word: str(i) for i, word in enumerate(DIGITS)} | {"nine": "9"}


def spoken_digits(words: list[str]) -> str:
    return "".join(DIGIT[w] for w in words if w in DIGIT)


def test_nine_categories_near_uniform():
    records = generate_commands(1000, seed=1)
    counts = Counter(r["category"] for r in records)
    assert set(counts) == set(CATEGORIES) and len(CATEGORIES) == 9
    assert max(counts.values()) - min(counts.values()) <= 1


def test_every_answer_is_a_json_action_line_then_a_readback_and_values_are_in_range():
    for record in generate_commands(2000, seed=2):
        messages = record_messages(record)
        assert [m.role for m in messages] == ["system", "user", "assistant"]
        json_line, readback = messages[-1].content.split("\n")
        action = json.loads(json_line)
        assert action == reference_action(messages)
        assert action["action"] == record["category"] and readback.startswith("Roger, ")
        value = action["value"]
        if action["action"] == "frequency":
            assert round(value * 1000) in VALUES["frequency"] and 118.0 <= value <= 136.975
        elif action["action"] == "squawk":
            assert value in VALUES["squawk"] and len(value) == 4 and set(value) <= set("01234567")
        else:
            assert value in VALUES[action["action"]], action
        assert set(action) <= {"action", "value", "direction"}


def test_spoken_numbers_say_the_value():
    for record in generate_commands(900, seed=4):
        action = json.loads(record["messages"][2]["content"].split("\n")[0])
        words = record["messages"][1]["content"].split(", ")[-1].split()  # without the call sign
        if action["action"] == "heading":
            assert int(spoken_digits(words)) == action["value"], words
        elif action["action"] == "squawk":
            assert spoken_digits(words) == action["value"], words
        elif action["action"] == "frequency":
            point = words.index("point")
            mhz, khz = spoken_digits(words[point - 3 : point]), spoken_digits(words[point:])
            assert float(f"{mhz}.{khz}") == action["value"], words
        elif action["action"] == "altitude" and "flight level" in " ".join(words):
            assert int(spoken_digits(words)) * 100 == action["value"], words


def test_spec_examples_appear_verbatim():
    answers = {r["messages"][1]["content"]: r["messages"][2]["content"] for r in generate_commands(20000, seed=0)}
    assert answers["turn heading three six zero"] == '{"action": "heading", "value": 360}\nRoger, turning to heading 360.'
    assert answers["climb and maintain flight level two four zero"].startswith('{"action": "altitude", "value": 24000}\n')
    assert answers["squawk seven seven zero zero"].startswith('{"action": "squawk", "value": "7700"}\n')


def test_same_seed_same_file_other_seed_other_file(tmp_path):
    write_commands(tmp_path / "a.jsonl", 300, seed=5)
    write_commands(tmp_path / "b.jsonl", 300, seed=5)
    write_commands(tmp_path / "c.jsonl", 300, seed=6)
    a = (tmp_path / "a.jsonl").read_bytes()
    assert a == (tmp_path / "b.jsonl").read_bytes() != (tmp_path / "c.jsonl").read_bytes()
    assert len(a.splitlines()) == 300


def test_same_records_as_before_the_demo_moved_out():
    """The sha256 of generate_commands(450, seed=5) when it still drew on flightmind/data/demo.py (Python 3.11)."""
    digest = hashlib.sha256(json.dumps(generate_commands(450, seed=5)).encode()).hexdigest()
    assert digest == "82a0ada55ea0bedba8ee8cf501b3e6a4041653fd91c4d67611ce4fdbc62ae720"


PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def module_level_imports(module: str) -> set[str]:
    """The flightmind modules that importing ``module`` imports, read from the sources (not executed)."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # the parent packages run first
        path = PACKAGE_ROOT.joinpath(*parts)
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("flightmind"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    is_module = PACKAGE_ROOT.joinpath(*sub.split(".")).with_suffix(".py").is_file()
                    todo.append(sub if is_module else node.module)
            elif isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.startswith("flightmind")]
    return seen


def test_commands_import_nothing_from_the_demo():
    imported = module_level_imports("flightmind.data.commands")
    assert {"flightmind.radio.phraseology", "flightmind.radio.traffic", "flightmind.atomic"} <= imported
    assert not [m for m in imported if m.startswith("flightmind.demo")]
    assert "flightmind.demo.weather" in module_level_imports("flightmind.demo.corpus")  # the walk follows chains


@pytest.mark.slow
def test_commands_import_nothing_from_the_demo_at_run_time():
    code = ("import sys, flightmind.data.commands; "
            "print(sorted(m for m in sys.modules if m.startswith('flightmind')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = ast.literal_eval(result.stdout)
    assert "flightmind.radio.traffic" in loaded and not [m for m in loaded if m.startswith("flightmind.demo")]
