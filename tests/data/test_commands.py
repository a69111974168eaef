import json
from collections import Counter

from flightmind.data.chat import record_messages, reference_action
from flightmind.data.commands import CATEGORIES, VALUES, generate_commands, write_commands
from flightmind.data.demo import DIGITS

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
