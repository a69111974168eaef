"""`flightmind import-hf`: a transformers Llama becomes a FlightMind checkpoint that computes the same
logits, fine-tunes and pretrains further with the usual configs, and exports back."""

import json
import shutil
from dataclasses import replace

import pytest
import torch

transformers = pytest.importorskip("transformers")

from flightmind.contracts import SPECIAL_TOKENS, load_tokenizer  # noqa: E402
from flightmind.data.chat import ChatTemplate, Message  # noqa: E402
from flightmind.errors import FlightMindError  # noqa: E402
from flightmind.export import export  # noqa: E402
from flightmind.interop.import_hf import import_hf, tokenizer_path  # noqa: E402
from flightmind.model import GPTConfig  # noqa: E402
from flightmind.model.checkpoint import build_model, read_checkpoint  # noqa: E402
from tests.helpers import flightmind_here  # noqa: E402
from tests.interop.helpers import random_llama  # noqa: E402

REPO_CONFIGS = __import__("pathlib").Path(__file__).resolve().parents[2] / "configs"
IDX = torch.randint(0, 512, (2, 40), generator=torch.Generator().manual_seed(0))


def hf_logits(directory, idx=IDX):
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(idx).logits


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory, chat_tokenizer_path):
    directory = tmp_path_factory.mktemp("llama")
    random_llama(directory, chat_tokenizer_path)
    return directory


def test_random_llama_imports_with_equal_logits(llama_dir, tmp_path, chat_tokenizer_path):
    result = import_hf(llama_dir, tmp_path / "imported.ckpt")
    assert result["added_tokens"] == [] and result["rows"] == (512, 512)
    checkpoint = torch.load(tmp_path / "imported.ckpt", weights_only=True)
    assert all(k.startswith("model.") for k in checkpoint["state_dict"]) and "model.head.weight" in checkpoint["state_dict"]
    shape = checkpoint["model_config"]
    assert (shape["n_head"], shape["n_kv_head"], shape["head_size"], shape["tie_embeddings"]) == (6, 2, 16, False)
    assert shape["rope_base"] == 500.0 and shape["norm_eps"] == 1e-5 and shape["hidden_dim"] == 160
    # The tokenizer is carried, and written beside the checkpoint for `flightmind prepare --tokenizer`.
    assert load_tokenizer(tokenizer_path(tmp_path / "imported.ckpt")).to_str() == load_tokenizer(chat_tokenizer_path).to_str()
    model = build_model(read_checkpoint(tmp_path / "imported.ckpt")).eval()
    with torch.no_grad():
        assert (model(IDX) - hf_logits(llama_dir)).abs().max() <= 1e-4


@pytest.mark.slow
def test_imported_llama_fine_tunes_with_the_smoke_config_and_exports_back(llama_dir, tmp_path, monkeypatch, capsys):
    import_hf(llama_dir, tmp_path / "imported.ckpt")
    done = flightmind_here(
        "fit", "-c", REPO_CONFIGS / "finetune_smoke.yaml",
        "--model.init_args.base_checkpoint", tmp_path / "imported.ckpt",
        "--data.init_args.tokenizer_path", tmp_path / "imported.tokenizer.json",
        "--data.init_args.build_commands", 300, "--data.init_args.action_eval_records", 2,
        "--trainer.max_steps", 4, "--model.init_args.optimizer.warmup_steps", 1, "--val_every_n_steps", 4, "--checkpoint.every_n_train_steps", 4,
        cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = tmp_path / "checkpoints" / "finetune_smoke" / "final.ckpt"
    tuned = build_model(read_checkpoint(ckpt)).eval()
    base = build_model(read_checkpoint(tmp_path / "imported.ckpt")).eval()
    with torch.no_grad():
        assert (tuned(IDX) - base(IDX)).abs().max() > 1e-4  # the adapters learned something
    export(ckpt, tmp_path / "hf")
    with torch.no_grad():
        assert (hf_logits(tmp_path / "hf") - tuned(IDX)).abs().max() <= 1e-4


@pytest.mark.slow
def test_imported_llama_continues_pretraining(llama_dir, tmp_path, prepared_dir):
    import lightning as L

    from flightmind.data.datamodule import PretrainDataModule
    from flightmind.training.optimizer import OptimizerSettings
    from flightmind.training.pretrain import PretrainModule

    # A model whose tokenizer is the prepared data's (1,024 tokens), imported, then trained 3 steps on it.
    random_llama(tmp_path / "llama", prepared_dir / "tokenizer.json", vocab_size=1024)
    import_hf(tmp_path / "llama", tmp_path / "imported.ckpt")
    module = PretrainModule(init_from=str(tmp_path / "imported.ckpt"), optimizer=OptimizerSettings(max_lr=1e-3, warmup_steps=1))
    assert module.config == read_checkpoint(tmp_path / "imported.ckpt").config
    # A shape in the config (a base config's d8) is ignored, said by name; runtime settings still apply.
    with pytest.warns(UserWarning, match=r"training continues with the checkpoint's shape; model.init_args.shape's depth=8 \(the checkpoint's: 2\), .*dim=512 \(the checkpoint's: 96\).* are ignored"):
        configured = PretrainModule(init_from=str(tmp_path / "imported.ckpt"), shape=GPTConfig(depth=8, attention="math"))
    assert configured.config == replace(module.config, attention="math")
    data = PretrainDataModule(data_dir=str(prepared_dir), seq_len=64, batch_size=4, num_workers=0)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, precision="32-true", max_steps=3, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, limit_val_batches=0, num_sanity_val_steps=0,
    )  # fmt: skip
    start = build_model(read_checkpoint(tmp_path / "imported.ckpt")).state_dict()
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 3
    moved = max((module.model.state_dict()[k] - v).abs().max() for k, v in start.items())
    assert moved > 1e-5
    trainer.save_checkpoint(tmp_path / "continued.ckpt")
    assert read_checkpoint(tmp_path / "continued.ckpt").tokenizer.to_str() == load_tokenizer(prepared_dir / "tokenizer.json").to_str()


def test_tokenizer_without_flightmind_tokens_gets_them_and_the_embedding_grows(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from flightmind.data.commands import generate_commands

    # A SmolLM2-like tokenizer: <|endoftext|> and ChatML markers, none of FlightMind's chat markers.
    texts = [m["content"] for record in generate_commands(300, seed=3) for m in record["messages"]]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)  # fmt: skip
    tokenizer.train_from_iterator(texts, trainer=trainer)
    assert tokenizer.get_vocab_size() == 400
    tokenizer.save(str(tmp_path / "foreign.json"))
    random_llama(tmp_path / "llama", tmp_path / "foreign.json", vocab_size=400, tie_word_embeddings=True)
    result = import_hf(tmp_path / "llama", tmp_path / "imported.ckpt")
    assert result["added_tokens"] == list(SPECIAL_TOKENS[1:]) and result["rows"] == (400, 512)
    saved = read_checkpoint(tmp_path / "imported.ckpt")
    imported = saved.tokenizer
    assert [imported.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 400, 401, 402, 403]
    chat = [Message("user", "gear down"), Message("assistant", "Gear down.")]
    assert ChatTemplate(imported).encode(chat)[0][0] == 401  # the chat markers are single tokens now
    model = build_model(saved).eval()
    idx = IDX % 400
    with torch.no_grad():
        assert (model(idx)[..., :400] - hf_logits(tmp_path / "llama", idx)).abs().max() <= 1e-4
    embed = model.embed.weight.detach()
    assert embed.shape == (512, 96) and torch.allclose(embed[404:], embed[:400].mean(0).expand(108, -1))
    for token, row in zip(SPECIAL_TOKENS[1:], range(400, 404)):  # each marker: the mean of the pieces spelling it
        pieces = tokenizer.encode(token).ids
        assert len(pieces) > 1 and torch.allclose(embed[row], embed[pieces].mean(0))
    assert len({tuple(embed[row].tolist()) for row in range(400, 404)}) == 4
    # And back out: a 512-row Llama whose tokenizer holds the added tokens.
    export(tmp_path / "imported.ckpt", tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["vocab_size"] == 512 and config["tie_word_embeddings"] is True
    with torch.no_grad():
        assert (hf_logits(tmp_path / "hf", idx) - model(idx)).abs().max() <= 1e-4
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert hf_tokenizer.convert_tokens_to_ids("<|end|>") == 403


REFUSED = [
    ({"attention_bias": True}, "biases"),
    ({"mlp_bias": True}, "biases"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, r"RoPE scaling \(rope_type llama3\)"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}}, r"RoPE scaling \(rope_type yarn\)"),
    ({"sliding_window": 4096}, "sliding-window attention"),
    ({"model_type": "mistral", "architectures": ["MistralForCausalLM"]}, "architecture MistralForCausalLM"),
    ({"hidden_act": "gelu"}, "activation gelu"),
    ({"vocab_size": 128256}, "a vocabulary of 128,256 tokens is not supported"),
]


@pytest.mark.parametrize("change,message", REFUSED, ids=[m.split()[0].strip("\\(") for _, m in REFUSED])
def test_what_the_gpt_does_not_have_is_refused_with_one_line(llama_dir, tmp_path, capsys, change, message):
    from flightmind.cli import main

    directory = tmp_path / "model"
    shutil.copytree(llama_dir, directory)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(FlightMindError, match=message):
        import_hf(directory, tmp_path / "x.ckpt")
    assert main(["import-hf", str(directory), "--out", str(tmp_path / "x.ckpt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and not (tmp_path / "x.ckpt").exists()


def test_import_cli_prints_what_it_wrote(llama_dir, tmp_path, capsys):
    from flightmind.cli import main

    assert main(["import-hf", str(llama_dir), "--out", str(tmp_path / "m.ckpt")]) == 0
    out = capsys.readouterr().out
    assert "2 layers, width 96, 6 heads (2 key/value)" in out and "flightmind prepare --tokenizer" in out
    assert main(["import-hf", str(tmp_path), "--out", str(tmp_path / "y.ckpt")]) == 2  # no config.json
    assert "holds no config.json" in capsys.readouterr().err
