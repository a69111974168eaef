import json

import pytest
import torch

from flightmind.contracts import IGNORE_INDEX
from flightmind.data.commands import write_commands
from flightmind.data.finetune import FinetuneDataModule, pad_batch
from flightmind.errors import FlightMindError


def write_lines(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def chat(user, answer):
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


BAD_LINES = [
    chat("gear down", '{"action": "gear", "value": "down"}\nRoger, gear down.'),
    {"messages": [{"role": "user", "content": "hello"}]},  # 2: no assistant turn
    {"messages": [{"role": "copilot", "content": "x"}, {"role": "assistant", "content": "y"}]},  # 3: unknown role
    {"prompt": ["not", "a", "string"], "response": "y"},  # 4: non-string content
    "{not json",  # 5
    {"prompt": "flaps up", "response": '{"action": "flaps", "value": 0}\nRoger, flaps up.'},
]


def test_bad_records_are_skipped_and_counted(tmp_path, chat_tokenizer_path):
    data = write_lines(tmp_path / "chat.jsonl", BAD_LINES)
    dm = FinetuneDataModule([str(data)], tokenizer_path=str(chat_tokenizer_path), val_files=[str(data)])
    dm.setup("fit")
    assert len(dm.train_set) == 2
    assert dict(dm.stats.skipped.by_reason) == {"no_assistant": 2, "unknown_role": 2, "not_string": 2, "not_json": 2}


def test_strict_names_file_and_line(tmp_path, chat_tokenizer_path):
    data = write_lines(tmp_path / "chat.jsonl", BAD_LINES)
    dm = FinetuneDataModule([str(data)], tokenizer_path=str(chat_tokenizer_path), strict=True)
    with pytest.raises(FlightMindError, match=rf"{data}:2: no assistant turn"):
        dm.setup("fit")
    write_lines(data, [BAD_LINES[0], BAD_LINES[2]])
    with pytest.raises(FlightMindError, match=rf"{data}:2: message 1 has role 'copilot'"):
        dm.setup("fit")


def test_long_records_are_truncated_and_counted(tmp_path, chat_tokenizer_path):
    long_answer = "Roger, " + "heading three six zero " * 40
    lines = [chat("gear down", "Roger, gear down.")] * 3 + [chat("turn heading three six zero", long_answer)] * 2
    lines += [chat("turn heading three six zero " * 40, "Roger.")]  # its answer falls beyond the cut
    data = write_lines(tmp_path / "chat.jsonl", lines)
    dm = FinetuneDataModule([str(data)], tokenizer_path=str(chat_tokenizer_path), val_files=[str(data)], max_seq_len=32)
    dm.setup("fit")
    assert (dm.stats.truncated, dm.stats.truncated_away) == (2 * 3, 1 * 2)  # train and validation both read it
    assert len(dm.train_set) == 5 and max(tokens.numel() for tokens, _ in dm.train_set) == 33


def test_validation_split_is_held_out_by_seed(tmp_path, chat_tokenizer_path):
    lines = [chat(f"squawk {i:04o}", json.dumps({"action": "squawk", "value": f"{i:04o}"})) for i in range(400)]
    data = write_lines(tmp_path / "unique.jsonl", lines)
    kwargs = dict(tokenizer_path=str(chat_tokenizer_path), val_fraction=0.25, action_eval_records=5)
    dm = FinetuneDataModule([str(data)], **kwargs)
    dm.setup("fit")
    train = {tuple(t.tolist()) for t, _ in dm.train_set}
    val = {tuple(t.tolist()) for t, _ in dm.eval_set}
    assert len(dm.train_set) + len(dm.eval_set) == 400 and 60 <= len(dm.eval_set) <= 140
    assert not train & val
    again = FinetuneDataModule([str(data)], **kwargs)
    again.setup("validate")
    assert [t.tolist() for t, _ in again.eval_set] == [t.tolist() for t, _ in dm.eval_set]
    other = FinetuneDataModule([str(data)], **kwargs, seed=1)
    other.setup("validate")
    assert [t.tolist() for t, _ in other.eval_set] != [t.tolist() for t, _ in dm.eval_set]
    # Held-out records that end in a JSON action are also scored on it.
    assert len(dm.action_set) == 5
    first = dm.action_set[0]
    assert first["prompt"][-1] == 3  # <|assistant|>
    assert dm.tokenizer().decode(first["prompt"], skip_special_tokens=False) == f"<|user|>squawk {first['action']['value']}<|end|><|assistant|>"


def test_records_sharing_a_prompt_stay_on_one_side_of_the_split(tmp_path, chat_tokenizer_path):
    # Synthetic commands repeat their phrasings: 2,000 records hold far fewer distinct prompts.
    data = tmp_path / "commands.jsonl"
    write_commands(data, 2000, seed=0)
    records = [json.loads(line) for line in data.read_text().splitlines()]
    prompts = [next(m["content"] for m in r["messages"] if m["role"] == "user") for r in records]
    assert len(set(prompts)) < 0.9 * len(prompts)
    dm = FinetuneDataModule([str(data)], tokenizer_path=str(chat_tokenizer_path), val_fraction=0.1)
    dm.setup("fit")
    user_id, end_id = dm.tokenizer().token_to_id("<|user|>"), dm.tokenizer().token_to_id("<|end|>")

    def prompt_of(tokens):
        tokens = tokens.tolist()
        start = tokens.index(user_id) + 1
        return tuple(tokens[start : tokens.index(end_id, start)])

    train = {prompt_of(t) for t, _ in dm.train_set}
    held_out = [prompt_of(t) for t, _ in dm.eval_set]
    assert 100 <= len(held_out) <= 300 and len(dm.train_set) + len(held_out) == 2000
    assert not train & set(held_out), "a validation prompt also occurs in training"


def test_system_prompt_is_added_to_records_without_one(tmp_path, chat_tokenizer_path):
    data = write_lines(tmp_path / "pairs.jsonl", [{"prompt": "gear up", "response": "Roger, gear up."}])
    dm = FinetuneDataModule([str(data)], tokenizer_path=str(chat_tokenizer_path), val_files=[str(data)], system_prompt="Be brief.")
    dm.setup("fit")
    tokens, labels = dm.train_set[0]
    assert tokens[0] == 1 and dm.tokenizer().decode(tokens.tolist(), skip_special_tokens=False).startswith("<|system|>Be brief.<|end|><|user|>")


def test_batches_are_padded_per_batch_with_masks():
    a = (torch.tensor([1, 10, 11, 4, 3, 12, 4]), torch.tensor([-100, -100, -100, -100, -100, 12, 4]))
    b = (torch.tensor([2, 13, 4, 3, 14]), torch.tensor([-100, -100, -100, -100, 14]))
    batch = pad_batch([a, b], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 10, 11, 4, 3, 12], [2, 13, 4, 3, 0, 0]]
    assert batch["targets"].tolist() == [[-100, -100, -100, -100, 12, 4], [-100, -100, -100, 14, -100, -100]]
    assert batch["attention_mask"].tolist() == [[True] * 6, [True] * 4 + [False] * 2]
    assert (batch["targets"][~batch["attention_mask"]] == IGNORE_INDEX).all()


def test_build_commands_writes_the_missing_train_file(tmp_path, chat_tokenizer_path):
    data = tmp_path / "made" / "commands.jsonl"
    dm = FinetuneDataModule([str(data)], tokenizer_path=str(chat_tokenizer_path), build_commands=50)
    dm.prepare_data()
    assert len(data.read_text().splitlines()) == 50
    missing = FinetuneDataModule([str(tmp_path / "nowhere.jsonl")], tokenizer_path=str(chat_tokenizer_path))
    missing.prepare_data()
    with pytest.raises(FlightMindError, match="nowhere.jsonl does not exist.*synth-commands"):
        missing.setup("fit")
