"""The memory planner: its static parts by formula, its traced activations against memory measured
on the CPU (benchmarks/plan_check.py's measurement, in fresh processes), its verdicts for every
shipped config (the README's table), and fit's refusal of a config that cannot fit."""

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from flightmind.errors import FlightMindError
from flightmind.model import GPTConfig
from flightmind.training.budget import GPUS
from flightmind.training.parallel import ActivationCheckpointing
from flightmind.training.plan import GiB, TABLE_HEADER, Setup, check_fits, gpu_named, plan, table_row, trace

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from benchmarks.plan_check import measure, predict  # noqa: E402

TINY = GPTConfig(depth=2, vocab_size=512, max_seq_len=64)


def test_static_parts_follow_the_parameter_count():
    n = TINY.num_params()
    single = plan(Setup(TINY, 2, 64), GPUS["h100"])
    assert (single.parts["parameters"], single.parts["gradients"], single.parts["AdamW state"]) == (4 * n, 4 * n, 8 * n)
    ddp = plan(Setup(TINY, 2, 64, devices=2, strategy="ddp", bucket_view=False), GPUS["h100"])
    assert ddp.parts["gradients"] == 8 * n  # buckets beside the gradients
    fsdp = plan(Setup(TINY, 2, 64, accumulation=4, devices=4, strategy="fsdp"), GPUS["h100"])
    assert (fsdp.parts["parameters"], fsdp.parts["AdamW state"]) == (n, 2 * n)  # sharded over 4
    assert fsdp.parts["unsharded fp32 gradients (one sync per step)"] == 4 * n
    assert "autocast bf16 weight copies" not in fsdp.parts  # FSDP2's parameters are bf16 already
    assert single.parts["autocast bf16 weight copies"] == 2 * (TINY.matmul_params())  # every multiplied matrix, once


def test_the_trace_sees_what_checkpointing_and_compile_save():
    base = Setup(TINY, 4, 64, precision="32-true")
    plain, full = trace(base), trace(Setup(TINY, 4, 64, precision="32-true", checkpointing=ActivationCheckpointing("full")))
    assert full.block_activations < plain.block_activations / 2
    logits = 4 * 64 * 512 * 4
    assert plain.logits == logits and plain.loss >= 3 * logits  # eager: the fp32 log-probabilities and two gradients
    compiled = plan(Setup(TINY, 4, 64, precision="32-true", compile=True), None)
    assert compiled.parts["logits + loss"] == 2 * logits


def test_largest_micro_batch_and_refusal_with_the_fix():
    setup = Setup(GPTConfig(depth=2, vocab_size=512, max_seq_len=256), 8, 256)
    p = plan(setup, GPUS["h100"])
    per_sample, room = p.per_sample, 0.5 * GiB
    memory = p.with_margin + room  # room for a few more sequences
    bigger = plan(setup, GPUS["h100"], memory_bytes=memory)
    assert bigger.fits and bigger.largest_micro_batch == 8 + int(room / (1 + 0.08) // per_sample)
    small = plan(setup, GPUS["h100"], memory_bytes=p.with_margin - 4 * per_sample)
    assert not small.fits and small.largest_micro_batch < 8
    model = SimpleNamespace(config=setup.config, hparams={}, compile_model=False, activation_checkpointing=ActivationCheckpointing())
    data = SimpleNamespace(batch_size=8, seq_len=256)
    trainer = {"accumulate_grad_batches": 4, "devices": 1, "precision": "bf16-mixed", "accelerator": "gpu"}
    with pytest.raises(FlightMindError, match=r"does not fit .*planned peak .* fix: micro-batch \d with accumulation \d+"):
        check_fits(model, data, trainer, p.with_margin - 4 * per_sample, "NVIDIA H100 80GB HBM3")


def test_fit_plans_before_the_trainer_runs_on_a_gpu(monkeypatch):
    from lightning.pytorch.accelerators import CUDAAccelerator

    from flightmind.training.lightning_cli import FlightMindCLI

    seen = {}
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=4 * GiB))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA GeForce RTX 4060")
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda device=None: 0.5, raising=False)
    planned = SimpleNamespace(peak=GiB, with_margin=2 * GiB)
    monkeypatch.setattr("flightmind.training.plan.check_fits", lambda *args: seen.setdefault("args", args) and planned)
    cli = SimpleNamespace(config=SimpleNamespace(fit={"memory_check": True}), model="m", datamodule="d",
                          trainer=SimpleNamespace(accelerator=CUDAAccelerator(), strategy=SimpleNamespace(root_device=torch.device("cuda", 0))))
    FlightMindCLI.before_fit(cli)
    assert seen["args"][:3] == ("m", "d", cli.trainer) and seen["args"][3] == 2 * GiB  # the capped share
    cli.config.fit["memory_check"] = False
    seen.clear()
    FlightMindCLI.before_fit(cli)
    assert not seen


def test_the_card_comes_from_the_option_or_the_config_name():
    assert gpu_named(None, "configs/rtx4060_d8.yaml") is GPUS["rtx4060"]
    assert gpu_named(None, "configs/h100x4_d24.yaml") is GPUS["h100"]
    assert gpu_named("A100-40GB", "configs/h100x4_d24.yaml") is GPUS["a100-40gb"]
    assert gpu_named(None, "configs/smoke.yaml") is None
    with pytest.raises(FlightMindError, match="not a known card"):
        gpu_named("v100")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["d4 bf16-mixed", "d4 fp32 full ckpt", "d2 fp32 vocab 16k"])
def test_planned_peak_is_within_15_percent_of_the_measured(name):
    from benchmarks.plan_check import CASES, spec

    case = spec(next(c for c in CASES if c[0] == name))
    measured, planned = measure(case), predict(case)
    for part in ("static", "transient"):
        assert planned[part] == pytest.approx(measured[part], rel=0.15), part


@pytest.mark.slow
def test_every_shipped_config_fits_its_card_and_the_readme_says_so():
    readme = (REPO / "README.md").read_text()
    assert "\n".join(TABLE_HEADER) in readme
    for path in sorted((REPO / "configs").glob("*.yaml")):
        if path.name.startswith("finetune_"):
            continue  # planned by fit from the base checkpoint (their shape is the base's)
        row = table_row(str(path))
        assert row in readme, f"README's plan table is stale for {path.name}: {row}"
        assert "| fits |" in row or "| CPU |" in row, row


def test_flightmind_plan_prints_the_parts_and_the_verdict(capsys):
    from flightmind.cli import main

    args = ["plan", "-c", str(REPO / "configs" / "rtx4060_d8.yaml"), "--mfu", "0.35", "--",
            "--model.init_args.shape.depth", "2", "--data.init_args.seq_len", "256",
            "--model.init_args.shape.max_seq_len", "256"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "FlightMind d2" in out and "micro-batch 8 × sequence 256, accumulation 32" in out
    assert "card: RTX 4060 (8.00 GiB): fits; largest micro-batch that fits:" in out
    assert "throughput at 35% MFU" in out and "activations" in out
    assert main(["plan", "-c", str(REPO / "configs" / "rtx4060_d8.yaml"), "--gpu", "v100"]) == 2  # one clear line
