"""FSDP2 on the CPU: Lightning's ModelParallelStrategy with flightmind.training.parallel, gloo, 2
processes, through the real CLI, against a 1-process run with the same global batch.

Shows: the same weights after 3 optimizer steps (to 1e-5); gradients reduce-scattered only on the
micro-batch that ends an optimizer step; checkpoints written as torch distributed checkpoint
directories (a shard per rank); an exact resume from one; and export, generate (load_trained) and
fine-tuning reading such a directory. Precision 32-true: the CPU has no bf16 matmul worth comparing;
the bf16 policy itself is checked in test_parallel.py.
"""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from flightmind.cli import main
from flightmind.model.checkpoint import load_trained, read_saved
from flightmind.model.distributed_checkpoint import is_distributed_checkpoint
from tests.training.ddp_probe import launch

REPO = Path(__file__).resolve().parents[2]
STEPS, ACCUMULATE, MICRO_BATCH, SEQ_LEN = 3, 2, 2, 64
FSDP2 = [
    "--trainer.devices", "2", "--trainer.strategy", "flightmind.training.fsdp2.FSDP2Strategy",
    "--trainer.strategy.data_parallel_size", "2", "--trainer.strategy.tensor_parallel_size", "1",
]  # fmt: skip

pytestmark = pytest.mark.slow


def fit_args(data_dir: Path, micro_batch: int, *extra: str) -> list[str]:
    return [
        "fit", "-c", str(REPO / "configs" / "smoke.yaml"),
        "--data.init_args.data_dir", str(data_dir), "--data.init_args.build_demo", "false",
        "--data.init_args.aviation_ratio", "1.0",
        "--data.init_args.seq_len", str(SEQ_LEN), "--data.init_args.batch_size", str(micro_batch),
        "--model.init_args.shape.depth", "2", "--model.init_args.shape.vocab_size", "1024",
        "--model.init_args.shape.max_seq_len", str(SEQ_LEN), "--model.init_args.optimizer.warmup_steps", "0",
        "--model.init_args.optimizer.eps", "1e-6",  # see test_ddp.py: the first AdamW update stays smooth
        "--trainer.max_steps", str(STEPS), "--trainer.accumulate_grad_batches", str(ACCUMULATE),
        "--checkpoint.dirpath", "checkpoints/fsdp2", "--checkpoint.every_n_train_steps", "1",
        "--samples.every_n_validations", "0", *extra,
    ]  # fmt: skip


def fsdp2_fit(data_dir: Path, cwd: Path, *extra: str) -> str:
    # Every rank in the same directory: each writes its shard into the same checkpoint directory.
    command = [sys.executable, "-m", "flightmind.cli", *fit_args(data_dir, MICRO_BATCH, *FSDP2, *extra)]
    return launch(command, cwd, timeout=400)


@pytest.fixture(scope="module")
def one_process(prepared_dir, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("one_process")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        assert main(fit_args(prepared_dir, 2 * MICRO_BATCH)) == 0
    return cwd / "checkpoints" / "fsdp2"


@pytest.fixture(scope="module")
def two_processes(prepared_dir, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("fsdp2")
    output = fsdp2_fit(prepared_dir, cwd, "--trainer.callbacks+=tests.training.fsdp2_probe.GradientSyncProbe")
    probes = [json.loads((cwd / "probe" / f"rank{r}.json").read_text()) for r in range(2)]
    return SimpleNamespace(cwd=cwd, checkpoints=cwd / "checkpoints" / "fsdp2", probes=probes, output=output)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return read_saved(path).state_dict


def test_two_process_fsdp2_equals_one_process_with_the_same_global_batch(one_process, two_processes):
    assert [p["world_size"] for p in two_processes.probes] == [2, 2]
    assert two_processes.probes[0]["sharded"].startswith("FSDP")  # fully_shard made the GPT an FSDPModule
    final = two_processes.checkpoints / "final.ckpt"
    assert is_distributed_checkpoint(final)
    assert sorted(p.name for p in two_processes.checkpoints.iterdir()) == ["final.ckpt", "last.ckpt", "step_1.ckpt", "step_2.ckpt", "step_3.ckpt"]
    assert sorted(p.name for p in final.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    reference, sharded = weights(one_process / "final.ckpt"), weights(final)
    assert list(sharded) == list(reference)
    for key, expected in reference.items():
        torch.testing.assert_close(sharded[key], expected, atol=1e-5, rtol=0, msg=key)
    assert not torch.equal(weights(two_processes.checkpoints / "step_1.ckpt")["embed.weight"], reference["embed.weight"])


def test_gradients_are_reduce_scattered_once_per_optimizer_step(two_processes):
    for probe in two_processes.probes:
        n = probe["parameters"]
        # micro-batches 0, 2, 4 accumulate unsharded (no .grad on the shards); 1, 3, 5 reduce-scatter.
        assert probe["with_grad"] == [0, n] * STEPS, probe


def test_resume_from_a_distributed_checkpoint_is_exact_with_asynchronous_saves(prepared_dir, two_processes, tmp_path):
    step_2 = two_processes.checkpoints / "step_2.ckpt"
    output = fsdp2_fit(prepared_dir, tmp_path, "--ckpt_path", str(step_2), "--checkpoint.asynchronous", "true")
    assert "Restored all states" in output
    checkpoints = tmp_path / "checkpoints" / "fsdp2"
    # final and last: directories of hard links to step_3's files, written once, in the background
    assert sorted(p.name for p in checkpoints.iterdir()) == ["final.ckpt", "last.ckpt", "step_3.ckpt"]
    for name in ("final.ckpt", "last.ckpt"):
        files = sorted(p.name for p in (checkpoints / name).iterdir())
        assert files == sorted(p.name for p in (checkpoints / "step_3.ckpt").iterdir()) and "meta.pt" in files
        assert all((checkpoints / name / f).samefile(checkpoints / "step_3.ckpt" / f) for f in files)
    resumed, uninterrupted = weights(checkpoints / "final.ckpt"), weights(two_processes.checkpoints / "final.ckpt")
    for key, expected in uninterrupted.items():
        torch.testing.assert_close(resumed[key], expected, atol=1e-7, rtol=0, msg=key)


def test_export_generate_and_fine_tuning_read_a_distributed_checkpoint(two_processes, tmp_path):
    from flightmind.training.finetune import FinetuneModule

    final = two_processes.checkpoints / "final.ckpt"
    saved = read_saved(final)
    assert saved.global_step == STEPS and saved.config.depth == 2 and saved.tokenizer is not None
    model, tokenizer = load_trained(final)  # what `flightmind generate --ckpt DIR` runs
    for key, value in saved.state_dict.items():
        assert torch.equal(model.state_dict()[key], value), key
    assert main(["export", "--ckpt", str(final), "--out", str(tmp_path / "exported")]) == 0
    exported, _ = load_trained(tmp_path / "exported")
    for key, value in saved.state_dict.items():
        assert torch.equal(exported.state_dict()[key], value), key
    module = FinetuneModule(base_checkpoint=str(final), lora_r=2)
    assert module.config == saved.config
    base = module.build_model()
    ids = torch.randint(0, 1024, (1, 16))
    torch.testing.assert_close(base.eval()(ids), model(ids))  # LoRA's B starts at zero: the base model's outputs
