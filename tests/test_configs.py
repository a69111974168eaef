"""Every shipped config parses through the real CLI and trains the tokens per optimizer step it states."""

from pathlib import Path

import pytest

from flightmind.training.lightning_cli import expand_config_bases, instantiate_config
from flightmind.errors import FlightMindError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# config: (tokens per optimizer step, optimizer steps, validation every N optimizer steps, parameters)
# Parameters with the spec's 32,768-token vocabulary; an unset vocab_size follows the run's tokenizer.
EXPECTED = {
    "smoke.yaml": (2_048, 20, 10, 12_585_216),
    "rtx4060_d8.yaml": (524_288, 5_000, 500, 50_340_352),
    "h100x4_d24.yaml": (524_288, 95_000, 500, 956_376_576),
    "h100x4_d32.yaml": (524_288, 95_000, 500, 2_214_725_632),
    "h100x4x2_d24.yaml": (524_288, 95_000, 500, 956_376_576),
}
# Pretraining configs; the fine-tuning ones (finetune_*.yaml) need a base checkpoint to instantiate
# and are checked in tests/test_cli_finetune.py.
SHIPPED = sorted(path.name for path in CONFIGS.glob("*.yaml") if not path.name.startswith("finetune_"))


def test_every_shipped_config_has_its_expected_numbers():
    assert SHIPPED == sorted(EXPECTED), "add the new config's tokens per step, steps and validation interval to EXPECTED"


@pytest.mark.parametrize("name", SHIPPED)
def test_config_parses_and_trains_the_tokens_per_step_it_states(name):
    model, data, trainer = instantiate_config("-c", str(CONFIGS / name))
    tokens = data.batch_size * trainer.accumulate_grad_batches * trainer.devices * trainer.num_nodes * data.seq_len
    every = trainer.val_check_interval // trainer.accumulate_grad_batches  # val_check_interval counts micro-batches
    assert (tokens, trainer.max_steps, every, model.config.num_params()) == EXPECTED[name]
    assert f"= {tokens:,}" in (CONFIGS / name).read_text()  # the header comment states it
    assert data.seq_len <= model.config.max_seq_len


def test_a_hardware_config_holds_only_what_differs_from_its_base(tmp_path):
    assert expand_config_bases(["fit", "-c", str(CONFIGS / "h100x4x2_d24.yaml")]) == [
        "fit",
        "-c", str(CONFIGS / "base" / "pretrain.yaml"),
        "-c", str(CONFIGS / "h100x4_d24.yaml"),
        "-c", str(CONFIGS / "h100x4x2_d24.yaml"),
        "--base", "null",
    ]  # fmt: skip
    model, data, trainer = instantiate_config("-c", str(CONFIGS / "h100x4x2_d24.yaml"))
    assert (trainer.num_nodes, trainer.accumulate_grad_batches) == (2, 4)  # its own keys
    assert (trainer.devices, model.config.depth, data.batch_size) == (4, 24, 8)  # from h100x4_d24.yaml
    assert (model.hparams.optimizer["max_lr"], trainer.log_every_n_steps) == (6e-4, 10)  # from base/pretrain.yaml


def test_base_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.yaml"
    missing.write_text("base: nowhere.yaml\n")
    with pytest.raises(FlightMindError, match=r"missing.yaml: its `base: nowhere.yaml` was not found"):
        expand_config_bases(["-c", str(missing)])
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(FlightMindError, match="form a cycle"):
        expand_config_bases([f"--config={tmp_path / 'a.yaml'}"])
