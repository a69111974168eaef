import json

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from flightmind.contracts import IGNORE_INDEX
from flightmind.data.commands import write_commands
from flightmind.data.finetune import FinetuneDataModule
from flightmind.contracts import load_tokenizer, tokenizer_hash
from flightmind.errors import FlightMindError
from flightmind.export import export
from flightmind.model.checkpoint import load_trained
from flightmind.model import GPT, GPTConfig
from flightmind.model.lora import LoRALinear
from flightmind.training.finetune import FinetuneModule
from flightmind.training.optimizer import OptimizerSettings
from tests.helpers import recomputed_action_accuracy
from tests.helpers import write_checkpoint


@pytest.fixture(scope="module")
def base_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    base = GPT(GPTConfig.from_depth(2, vocab_size=512, max_seq_len=128))
    return write_checkpoint(tmp_path_factory.mktemp("base") / "base.ckpt", base), base


def built(path, **kwargs) -> FinetuneModule:
    torch.manual_seed(1)
    module = FinetuneModule(str(path), lora_r=4, lora_alpha=8, **kwargs)
    module.configure_model()
    return module


def test_shape_comes_from_the_base_and_only_lora_tensors_reach_the_optimizer(base_ckpt):
    path, base = base_ckpt
    module = built(path)
    assert module.config == base.config and isinstance(module.model.blocks[1].mlp.up, LoRALinear)
    module._trainer = type("T", (), {"max_steps": 10})()
    optimizer = module.configure_optimizers()["optimizer"]
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    lora = {id(p) for name, p in module.model.named_parameters() if "lora_" in name}
    assert in_optimizer == lora == {id(p) for p in module.parameters() if p.requires_grad}
    idx = torch.randint(0, 512, (2, 32), generator=torch.Generator().manual_seed(0))
    assert torch.equal(module.model(idx), base(idx))  # base weights loaded, B = 0


def test_loss_counts_only_assistant_tokens(base_ckpt):
    module = built(base_ckpt[0])
    torch.manual_seed(2)
    input_ids = torch.randint(0, 512, (2, 12))
    targets = torch.full((2, 12), IGNORE_INDEX)
    targets[0, 5:8] = torch.tensor([7, 8, 4])
    targets[1, 2:4] = torch.tensor([9, 4])
    logits = module.model(input_ids)
    picked = torch.cat([logits[0, 5:8], logits[1, 2:4]])
    expected = F.cross_entropy(picked, torch.tensor([7, 8, 4, 9, 4]))
    torch.testing.assert_close(module.loss({"input_ids": input_ids, "targets": targets}), expected)


def test_missing_or_unreadable_base_is_one_clear_error(tmp_path):
    with pytest.raises(FlightMindError, match="base_checkpoint .*nowhere.ckpt does not exist: pretrain first"):
        FinetuneModule(str(tmp_path / "nowhere.ckpt"))
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(FlightMindError, match="cannot read checkpoint"):
        FinetuneModule(str(tmp_path / "junk.ckpt"))


def test_base_whose_weights_do_not_match_its_config_is_one_clear_error(base_ckpt, tmp_path):
    checkpoint = torch.load(base_ckpt[0], weights_only=True)
    checkpoint["state_dict"]["model.blocks.0.attn.q.weight"] = torch.zeros(64, 128)
    torch.save(checkpoint, tmp_path / "bad.ckpt")
    module = FinetuneModule(str(tmp_path / "bad.ckpt"))
    with pytest.raises(FlightMindError, match=r"1 of another shape \(blocks\.0\.attn\.q\.weight \(64, 128\) where the model has \(128, 128\)\)"):
        module.configure_model()


def test_resuming_with_other_lora_settings_is_one_clear_error(base_ckpt):
    module = built(base_ckpt[0])
    saved = {"model_config": module.config.to_dict(), "lora": {**module.lora_settings, "r": 8}}
    with pytest.raises(FlightMindError, match="fine-tuned with LoRA r=8 but this run configures r=4"):
        module.on_load_checkpoint(saved)


class FakeDataModule:
    def __init__(self, tokenizer, action_set):
        self._tokenizer, self.action_set = tokenizer, action_set

    def tokenizer(self):
        return self._tokenizer


def test_action_accuracy_decodes_greedily_and_compares_parsed_json(base_ckpt, chat_tokenizer_path, monkeypatch):
    import flightmind.training.finetune as finetune

    tokenizer = load_tokenizer(chat_tokenizer_path)
    module = built(base_ckpt[0])
    answers = {  # what the "model" writes after each prompt
        (10,): '{"value": 360, "action": "heading"}\nRoger, turning to heading 360.',  # other key order: right
        (11,): '{"action": "heading", "value": 36}\nRoger.',  # wrong value
        (12,): "Roger, turning to heading 360.",  # no JSON line
    }
    calls = []

    def fake_generate(model, prompt, max_new_tokens, *, temperature, stop_ids):
        calls.append((tuple(prompt), temperature, max_new_tokens))
        return iter(tokenizer.encode(answers[tuple(prompt)]).ids + [tokenizer.token_to_id("<|end|>")])

    monkeypatch.setattr(finetune, "generate", fake_generate)
    module._trainer = type("T", (), {"datamodule": FakeDataModule(tokenizer, None)})()
    reference = {"action": "heading", "value": 360}
    scores = module.action_scores([{"prompt": [p], "action": reference} for p in (10, 11, 12)])
    assert scores.tolist() == [1.0, 0.0, 0.0]
    assert [c[1:] for c in calls] == [(0.0, 48)] * 3  # greedy


def test_fine_tuning_trains_only_adapters_and_exports_the_result(base_ckpt, chat_tokenizer_path, tmp_path):
    path, base = base_ckpt
    data = tmp_path / "commands.jsonl"
    write_commands(data, 300, seed=0)
    dm = FinetuneDataModule([str(data)], tokenizer_path=str(chat_tokenizer_path), max_seq_len=96, batch_size=8,
                            val_fraction=0.1, action_eval_records=2)
    module = FinetuneModule(str(path), lora_r=4, lora_alpha=8, optimizer=OptimizerSettings(max_lr=1e-2, warmup_steps=2), action_max_new_tokens=8)
    trainer = L.Trainer(accelerator="cpu", max_steps=12, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=2, val_check_interval=12, check_val_every_n_epoch=None)
    trainer.fit(module, dm)
    # The last validation ran with the final weights: the logged accuracy is their accuracy.
    expected = recomputed_action_accuracy(module.model, dm.tokenizer(), dm.action_set, max_new_tokens=8)
    assert float(trainer.callback_metrics["val/action_acc"]) == pytest.approx(expected) and "val/loss" in trainer.callback_metrics
    frozen = {k: v for k, v in module.model.state_dict().items() if "lora_" not in k}
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in frozen.items())  # the base never moved
    assert any(layer.lora_B.abs().sum() > 0 for layer in module.model.modules() if isinstance(layer, LoRALinear))

    trainer.save_checkpoint(tmp_path / "ft.ckpt")
    saved = torch.load(tmp_path / "ft.ckpt", weights_only=True)
    assert saved["lora"] == {"r": 4, "alpha": 8.0, "targets": ["q", "k", "v", "o", "gate", "up", "down"]}
    # The tokenizer as every PretrainModule checkpoint holds it (from the datamodule's tokenizer_path), once.
    assert saved["tokenizer"]["json"] == chat_tokenizer_path.read_text(encoding="utf-8") and "tokenizer_json" not in saved
    assert saved["tokenizer"]["sha256"] == tokenizer_hash(load_tokenizer(chat_tokenizer_path))
    assert json.loads(saved["tokenizer"]["json"])["added_tokens"][4]["content"] == "<|end|>"
    export(tmp_path / "ft.ckpt", tmp_path / "out")
    loaded, _ = load_trained(tmp_path / "out")
    idx = torch.randint(0, 512, (2, 40), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(loaded(idx), module.model.eval()(idx), atol=1e-5, rtol=1e-5)


def fit_briefly(module, data_path, tokenizer_path):
    dm = FinetuneDataModule([str(data_path)], tokenizer_path=str(tokenizer_path), max_seq_len=96, batch_size=8, val_fraction=0.1)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, dm)


def test_data_tokenized_otherwise_than_the_base_is_one_clear_error(base_ckpt, chat_tokenizer_path, prepared_dir, tmp_path):
    _, base = base_ckpt
    data = tmp_path / "commands.jsonl"
    write_commands(data, 100, seed=0)
    carrying = write_checkpoint(tmp_path / "carrying.ckpt", base, tokenizer_json=chat_tokenizer_path.read_text(encoding="utf-8"))
    other = prepared_dir / "tokenizer.json"  # another BPE, same special tokens
    with pytest.raises(FlightMindError, match=rf"the base {carrying} was trained with another tokenizer .* than the data's {other}"):
        fit_briefly(FinetuneModule(str(carrying), lora_r=4, lora_alpha=8), data, other)
    fit_briefly(FinetuneModule(str(carrying), lora_r=4, lora_alpha=8), data, chat_tokenizer_path)  # its own: fine

    # A base without a tokenizer: at least the vocabulary must fit its embedding rows.
    path, _ = base_ckpt
    with pytest.raises(FlightMindError, match=rf"the tokenizer {other} has 1,024 tokens but the model has 512 embedding rows"):
        fit_briefly(FinetuneModule(str(path), lora_r=4, lora_alpha=8), data, other)
