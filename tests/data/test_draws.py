"""The start-up report: tokens each pool gives over max_steps against its size, and validation coverage."""

from pathlib import Path

import pytest

from flightmind.training.lightning_cli import instantiate_config
from flightmind.data.draws import plan_draws, validation_coverage

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def d24_draws(**overrides):
    _, data, trainer = instantiate_config("-c", str(CONFIGS / "h100x4_d24.yaml"))
    settings = dict(
        max_steps=trainer.max_steps, accumulate=trainer.accumulate_grad_batches, world_size=trainer.devices * trainer.num_nodes,
        batch_size=data.batch_size, seq_len=data.seq_len, ratio=data.aviation_ratio, aviation_tokens=None,
        general=(data.general.path, data.general.name),
    )
    return plan_draws(**{**settings, **overrides})


def test_the_d24_run_asks_the_full_fineweb_edu_for_34_9b_tokens_without_repeating():
    aviation, general = d24_draws()
    assert general.tokens == 95_000 * 524_288 * 7 // 10 == 34_865_152_000
    assert aviation.tokens + general.tokens == 95_000 * 524_288
    assert general.line() == "general HuggingFaceFW/fineweb-edu (default): 34.9B tokens over the run of 1.3T (published size), 0.0268 passes"
    assert general.warning is None


def test_a_sample_that_would_repeat_is_a_warning_and_aviation_repeating_is_the_plan():
    _, sample = d24_draws(general=("HuggingFaceFW/fineweb-edu", "sample-10BT"))
    assert sample.passes == pytest.approx(3.49, abs=0.005)
    assert sample.warning.startswith("the general HuggingFaceFW/fineweb-edu (sample-10BT) pool would come round 3.49 times")
    aviation, _ = d24_draws(aviation_tokens=107_000_000)
    assert aviation.line() == "aviation: 14.9B tokens over the run of 107M (meta.json), 140 passes; repeating it is the plan"
    assert aviation.warning is None
    unknown, local = d24_draws(general=("parquet", None))
    assert local.passes is None and local.warning is None and "size unknown" in local.line()
    assert "no meta.json" in unknown.line()


def test_a_pure_aviation_run_has_one_pool():
    assert [d.name for d in d24_draws(general=None)] == ["aviation"]


@pytest.mark.parametrize(
    "limit, world_size, scored",
    [(50, 1, 400), (1.0, 1, 520), (None, 1, 520), (0.5, 1, 256), (1.0, 4, 512), (2, 4, 64)],
)
def test_validation_coverage_counts_whole_batches_per_rank(limit, world_size, scored):
    # 527 windows, batches of 8: the d8 run's split, where limit_val_batches 50 scored 400 of them.
    assert validation_coverage(527, limit_val_batches=limit, batch_size=8, world_size=world_size) == (scored, 527)
