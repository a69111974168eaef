"""One reader for every kind of saved model: a pretraining checkpoint, a LoRA fine-tuning checkpoint
and an export directory, through `load_trained` and `flightmind generate`."""

import json

import pytest
import torch

from flightmind.data.tokenizer import save_tokenizer, train_tokenizer
from flightmind.contracts import load_tokenizer
from flightmind.errors import FlightMindError
from flightmind.export import export
from flightmind.model import GPT
from flightmind.model.checkpoint import load_trained
from flightmind.model.lora import lora_layers
from tests.helpers import LORA, fine_tuned, tiny_gpt, write_checkpoint

IDX = torch.randint(0, 512, (2, 48), generator=torch.Generator().manual_seed(0))


@pytest.fixture
def saved(tmp_path, chat_tokenizer_path):
    """A pretraining checkpoint, a LoRA checkpoint and that checkpoint's export, all with their tokenizer."""
    text = chat_tokenizer_path.read_text(encoding="utf-8")
    plain, adapted = tiny_gpt(), fine_tuned(seed=1)
    paths = {
        "pretraining": write_checkpoint(tmp_path / "pre.ckpt", plain, tokenizer_json=text),
        "lora": write_checkpoint(tmp_path / "lora.ckpt", adapted, lora=LORA, tokenizer_json=text),
    }
    export(paths["lora"], tmp_path / "exported", format="flightmind")
    paths["export"] = tmp_path / "exported"
    return paths, plain, adapted


def test_load_trained_reads_every_kind_of_saved_model(saved, chat_tokenizer_path):
    paths, plain, adapted = saved
    expected_tokenizer = load_tokenizer(chat_tokenizer_path).to_str()
    loaded = {kind: load_trained(path) for kind, path in paths.items()}
    for model, tokenizer in loaded.values():
        assert type(model) is GPT and not model.training and not lora_layers(model)
        assert list(model.state_dict()) == list(plain.state_dict())  # the plain GPT's keys
        assert tokenizer.to_str() == expected_tokenizer  # the one saved with the model
    assert torch.equal(loaded["pretraining"][0](IDX), plain(IDX))
    merged = loaded["lora"][0](IDX)
    torch.testing.assert_close(merged, adapted(IDX), atol=1e-5, rtol=1e-5)  # adapters merged, not dropped
    assert (merged - tiny_gpt(seed=1)(IDX)).abs().max() > 1e-2  # ... and they change the output
    assert torch.equal(loaded["export"][0](IDX), merged)  # float32 export: the merged weights exactly


def test_a_given_tokenizer_replaces_the_saved_one_and_must_fit_the_model(saved, tmp_path, chat_tokenizer_path):
    paths, _, _ = saved
    other = tmp_path / "other_tokenizer.json"
    save_tokenizer(train_tokenizer(["cleared to land runway two seven"] * 20, vocab_size=300), other)
    for path in paths.values():
        assert load_trained(path, tokenizer=other)[1].to_str() == load_tokenizer(other).to_str()
    small = write_checkpoint(tmp_path / "small.ckpt", tiny_gpt(vocab_size=300))
    with pytest.raises(FlightMindError, match=r"small\.ckpt does not hold its tokenizer: pass --tokenizer"):
        load_trained(small)
    with pytest.raises(FlightMindError, match=r"the tokenizer has 512 tokens but the model in .*small\.ckpt only 300 embedding rows"):
        load_trained(small, tokenizer=chat_tokenizer_path)


def test_unreadable_saved_models_are_clear_errors_naming_the_file(saved, tmp_path):
    paths, _, _ = saved
    with pytest.raises(FlightMindError, match=r"nothing\.ckpt does not exist: pass a \.ckpt .* or a directory written by `flightmind export`"):
        load_trained(tmp_path / "nothing.ckpt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FlightMindError, match=r"empty holds no config\.json"):
        load_trained(tmp_path / "empty")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(FlightMindError, match=r"cannot read checkpoint .*junk\.ckpt"):
        load_trained(tmp_path / "junk.ckpt")
    torch.save({"weights": 1}, tmp_path / "other.ckpt")
    with pytest.raises(FlightMindError, match=r"other\.ckpt is not a FlightMind checkpoint"):
        load_trained(tmp_path / "other.ckpt")

    config_path = paths["export"] / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "format": "gguf"}))
    with pytest.raises(FlightMindError, match=r"config\.json describes format 'gguf', not 'flightmind-gpt'"):
        load_trained(paths["export"])
    config_path.write_text(json.dumps(config))
    (paths["export"] / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(FlightMindError, match=r"cannot read .*exported/model\.safetensors .*export the model again"):
        load_trained(paths["export"])
