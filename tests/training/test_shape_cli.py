"""The model's shape set in YAML reaches training through the CLI: grouped-query attention and an
untied head train, save their shape, and (untied) export and load back to the same logits."""

import json

import pytest
import torch

from flightmind.cli import main
from flightmind.model import GPTConfig
from tests.helpers import REPO, scalars


def fit_with_shape(tmp_path, monkeypatch, prepared_dir, shape: dict, name: str):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shape.yaml").write_text(json.dumps({"model": {"init_args": {"shape": shape}}}))  # JSON is YAML
    code = main([
        "fit", "-c", str(REPO / "configs" / "smoke.yaml"), "-c", "shape.yaml",
        "--data.init_args.data_dir", str(prepared_dir), "--data.init_args.build_demo", "false",
        "--data.init_args.aviation_ratio", "1.0", "--trainer.max_steps", "6", "--val_every_n_steps", "6",
        "--trainer.limit_val_batches", "2", "--checkpoint.dirpath", f"checkpoints/{name}", "--samples.every_n_validations", "0",
    ])  # fmt: skip
    assert code == 0
    return torch.load(tmp_path / "checkpoints" / name / "final.ckpt", weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("n_kv_head", [1, 2])
def test_grouped_query_model_trains_from_a_yaml_setting(tmp_path, monkeypatch, prepared_dir, n_kv_head):
    shape = {"depth": 4, "head_size": 64, "n_kv_head": n_kv_head, "max_seq_len": 256}
    checkpoint = fit_with_shape(tmp_path, monkeypatch, prepared_dir, shape, f"gqa{n_kv_head}")
    config = GPTConfig.from_dict(checkpoint["model_config"])
    assert (config.n_head, config.n_kv_head, config.vocab_size) == (4, n_kv_head, 1024)  # 1,024 tokens: no rounding
    weights = sum(v.numel() for k, v in checkpoint["state_dict"].items() if k.startswith("model."))
    assert weights == config.num_params() == GPTConfig(vocab_size=1024, **shape).num_params()
    assert checkpoint["state_dict"]["model.blocks.0.attn.k.weight"].shape == (64 * n_kv_head, 256)
    losses = [loss for _, loss in scalars(tmp_path / "lightning_logs" / "version_0", "train/loss")]
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.5


@pytest.mark.slow
def test_untied_head_trains_and_exports(tmp_path, monkeypatch, prepared_dir):
    from flightmind.export import export
    from flightmind.model.checkpoint import build_model, load_trained, read_checkpoint

    checkpoint = fit_with_shape(tmp_path, monkeypatch, prepared_dir, {"depth": 2, "tie_embeddings": False, "max_seq_len": 256}, "untied")
    state = checkpoint["state_dict"]
    assert not torch.equal(state["model.head.weight"], state["model.embed.weight"])
    export(tmp_path / "checkpoints" / "untied" / "final.ckpt", tmp_path / "exported", dtype="float32")
    exported, _ = load_trained(tmp_path / "exported")
    trained = build_model(read_checkpoint(tmp_path / "checkpoints" / "untied" / "final.ckpt")).eval()
    tokens = torch.randint(0, 1024, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(exported(tokens), trained(tokens))
    assert exported.head is not None and not exported.config.tie_embeddings
