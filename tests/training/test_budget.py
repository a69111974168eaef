"""`flightmind budget` reproduces the spec's compute table; one table of GPU peaks serves everything."""

import math
from pathlib import Path

import pytest
import torch

from flightmind.cli import main
from flightmind.model import GPTConfig
from flightmind.training.budget import GPUS, Budget, gpu_for_device_name, peak_flops

SPEC_TOKENS_PER_STEP = 524_288


def same_to_2_significant_figures(value: float, spec: float) -> bool:
    """Within half a unit of the spec's second significant figure (2.85e20 ± 0.05e20, 20 ± 0.5)."""
    return abs(value - spec) <= 0.5 * 10 ** (math.floor(math.log10(abs(spec))) - 1)


def spec_run(depth: int, steps: int, gpus: int, gpu: str) -> Budget:
    return Budget(GPTConfig.from_depth(depth), steps, SPEC_TOKENS_PER_STEP, gpus, GPUS[gpu])


def test_flops_and_hours_of_the_spec_compute_table():
    d24, d32 = spec_run(24, 95_000, 4, "h100"), spec_run(32, 95_000, 4, "h100")
    assert same_to_2_significant_figures(d24.flops_6pd, 2.85e20)
    assert same_to_2_significant_figures(d32.flops_6pd, 6.6e20)
    assert same_to_2_significant_figures(d24.hours(d24.flops_6pd), 20)  # 4 × H100 at peak
    # The spec rounded before multiplying (6 × 50M × 2.6B = 7.8e17); exactly, 6 × 50.34M × 2.62B = 7.9e17.
    d8 = spec_run(8, 5_000, 1, "rtx4060")
    assert d8.flops_6pd == pytest.approx(7.8e17, rel=0.02)
    # The spec's 79 h is its measured wall time, "~25 %" its rounded utilization (20.0 / 79 = 25.4 %).
    assert d24.hours(d24.flops_6pd, mfu=0.25) == pytest.approx(79, rel=0.02)
    # Attention adds 12·n_layer·dim·T per token to 6·N_matmul: +16 % for d24 at T = 2048.
    assert d24.flops_with_attention / d24.flops_6pd == pytest.approx(1.157, abs=0.001)


def test_budget_command_prints_parameters_tokens_flops_hours_and_cost(capsys):
    argv = ["budget", "--depth", "24", "--steps", "95000", "--tokens-per-step", "524288", "--gpus", "4",
            "--gpu", "h100", "--mfu", "0.25", "--price-per-hour", "6.40"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "4 × H100 SXM (bf16 dense peak 989 TFLOP/s each)" in out
    assert "956.4M" in out and "49.81B = 95,000 steps × 524,288 tokens per step" in out
    assert "52.1 (Chinchilla-optimal ≈ 20: 2.6×)" in out
    six_pd = next(line for line in out.splitlines() if line.strip().startswith("6·P·D")).split()
    assert six_pd[1:] == ["2.86e+20", "20.1", "80.3", "$514"]
    with_attention = next(line for line in out.splitlines() if "with attention (T=2048)" in line).split()
    assert with_attention[3:] == ["3.31e+20", "23.2", "92.9", "$595"]


def test_budget_of_a_config_follows_its_whole_shape(tmp_path, capsys):
    configs = Path(__file__).resolve().parents[2] / "configs"
    assert main(["budget", "-c", str(configs / "h100x4_d24.yaml"), "--mfu", "0.25"]) == 0
    same = capsys.readouterr().out
    assert "956.4M" in same and "4 × H100 SXM" in same and "49.81B = 95,000 steps × 524,288 tokens per step" in same
    # A grouped-query, untied d24: the budget counts the shape the run trains.
    (tmp_path / "gqa.yaml").write_text(f"base: {configs / 'h100x4_d24.yaml'}\nmodel:\n  init_args:\n    shape:\n"
                                       "      n_kv_head: 4\n      tie_embeddings: false\n")
    assert main(["budget", "-c", str(tmp_path / "gqa.yaml")]) == 0
    shape = GPTConfig(depth=24, n_kv_head=4, tie_embeddings=False)
    assert f"{shape.num_params() / 1e6:,.1f}M" in capsys.readouterr().out


def test_bad_budget_arguments_are_one_clear_error(capsys):
    assert main(["budget", "--steps", "95000"]) == 2
    assert "give -c CONFIG, or --depth, --tokens-per-step" in capsys.readouterr().err
    assert main(["budget", "--depth", "24", "--steps", "95000", "--tokens-per-step", "524288", "--mfu", "25"]) == 2
    assert "--mfu is a fraction of the peak in (0, 1], got 25.0" in capsys.readouterr().err


def test_gpu_table_matches_device_names():
    assert gpu_for_device_name("NVIDIA H100 80GB HBM3").bf16_flops == 989e12
    assert gpu_for_device_name("NVIDIA H100 PCIe").bf16_flops == 756e12
    assert gpu_for_device_name("NVIDIA H200").bf16_flops == 989e12
    assert gpu_for_device_name("NVIDIA A100-SXM4-80GB").bf16_flops == 312e12
    assert gpu_for_device_name("NVIDIA GeForce RTX 4060").name == "RTX 4060"
    assert gpu_for_device_name("NVIDIA GeForce RTX 4060 Ti") is None
    assert gpu_for_device_name("NVIDIA L4") is None
    assert peak_flops(torch.device("cpu"), "bf16-mixed") is None
