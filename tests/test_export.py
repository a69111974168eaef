import json

import pytest
import torch

from flightmind.contracts import load_tokenizer
from flightmind.errors import FlightMindError
from flightmind.export import export
from flightmind.model import GPT
from flightmind.model.checkpoint import build_model, load_trained, read_checkpoint
from flightmind.model.lora import lora_layers
from tests.helpers import LORA, fine_tuned, tiny_gpt, write_checkpoint

IDX = torch.randint(0, 512, (2, 48), generator=torch.Generator().manual_seed(0))


def test_plain_pretraining_checkpoint_round_trip_is_exact(tmp_path, chat_tokenizer_path):
    model = tiny_gpt()
    ckpt = write_checkpoint(tmp_path / "final.ckpt", model, step=20)
    config = export(ckpt, tmp_path / "out", format="flightmind", tokenizer=chat_tokenizer_path)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    loaded, tokenizer = load_trained(tmp_path / "out")
    assert type(loaded) is GPT and list(loaded.state_dict()) == list(model.state_dict())
    assert torch.equal(loaded(IDX), model(IDX))
    assert tokenizer.to_str() == load_tokenizer(chat_tokenizer_path).to_str()
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written == config and written["model_config"] == model.config.to_dict()
    assert written["source"]["global_step"] == 20 and written["source"]["lora_merged"] is None


def test_lora_checkpoint_exports_merged_weights_with_the_plain_keys(tmp_path, chat_tokenizer_path):
    from safetensors.torch import load_file

    model = fine_tuned()
    tokenizer_json = load_tokenizer(chat_tokenizer_path).to_str()
    ckpt = write_checkpoint(tmp_path / "lora.ckpt", model, lora=LORA, tokenizer_json=tokenizer_json)
    export(ckpt, tmp_path / "out", format="flightmind")  # the tokenizer comes from the checkpoint
    weights = load_file(tmp_path / "out" / "model.safetensors")
    assert sorted(weights) == sorted(tiny_gpt().state_dict())  # no lora_A / lora_B
    loaded, tokenizer = load_trained(tmp_path / "out")
    torch.testing.assert_close(loaded(IDX), model(IDX), atol=1e-5, rtol=1e-5)
    assert tokenizer.to_str() == tokenizer_json
    # The same model, rebuilt unmerged from the checkpoint, still carries its adapters.
    unmerged = build_model(read_checkpoint(ckpt), merge=False).eval()
    assert len(lora_layers(unmerged)) == 2 * 7 and torch.equal(unmerged(IDX), model(IDX))


def test_bfloat16_export_loads_back_close(tmp_path, chat_tokenizer_path):
    model = tiny_gpt()
    export(write_checkpoint(tmp_path / "m.ckpt", model), tmp_path / "out", format="flightmind", tokenizer=chat_tokenizer_path, dtype="bfloat16")
    loaded, _ = load_trained(tmp_path / "out")
    torch.testing.assert_close(loaded(IDX), model(IDX), atol=0.05, rtol=0.05)


def test_pretraining_checkpoint_without_tokenizer_is_a_clear_error(tmp_path):
    ckpt = write_checkpoint(tmp_path / "final.ckpt", tiny_gpt())
    with pytest.raises(FlightMindError, match="does not hold its tokenizer.*--tokenizer"):
        export(ckpt, tmp_path / "out")
    assert not (tmp_path / "out" / "config.json").exists()


def test_misshapen_or_foreign_checkpoints_are_one_clear_error(tmp_path, chat_tokenizer_path):
    model = tiny_gpt()
    ckpt = write_checkpoint(tmp_path / "bad.ckpt", model)
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["model_config"].update(depth=4, dim=256, n_layer=4)  # says d4, holds d2 weights
    torch.save(checkpoint, ckpt)
    with pytest.raises(FlightMindError, match=r"do not fit.*missing \(blocks\.2\..*of another shape \(embed\.weight \(512, 128\) where the model has \(512, 256\)"):
        export(ckpt, tmp_path / "out", tokenizer=chat_tokenizer_path)
    torch.save({"weights": 1}, tmp_path / "other.ckpt")
    with pytest.raises(FlightMindError, match="not a FlightMind checkpoint"):
        read_checkpoint(tmp_path / "other.ckpt")
    with pytest.raises(FlightMindError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.ckpt")
    with pytest.raises(FlightMindError, match="holds no config.json"):
        load_trained(tmp_path)


def test_missing_safetensors_is_a_clear_error(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "safetensors", None)  # makes `import safetensors` fail
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(FlightMindError, match=r"pip install 'flightmind\[export\]'"):
        export(write_checkpoint(tmp_path / "m.ckpt", tiny_gpt()), tmp_path / "out")
