"""FSDP2 for d32 (built from its config; trained on the CPU in test_fsdp2.py), FSDP (v1) clipping,
activation checkpointing, compile."""

from pathlib import Path
from types import SimpleNamespace

import torch
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

from flightmind.model import GPTConfig
from flightmind.training.lightning_cli import instantiate_config
from flightmind.training.fsdp2 import FSDP2Strategy
from flightmind.training.pretrain import PretrainModule

REPO = Path(__file__).resolve().parents[2]


def test_d32_config_shards_with_fsdp2_and_compiles_per_block():
    model, data, trainer = instantiate_config("-c", str(REPO / "configs" / "h100x4_d32.yaml"))
    strategy = trainer.strategy
    # FSDP2: fully_shard in configure_model (training/parallel.py); atomic distributed checkpoints (fsdp2.py)
    assert isinstance(strategy, FSDP2Strategy) and isinstance(strategy, ModelParallelStrategy)
    assert (strategy._data_parallel_size, strategy._tensor_parallel_size) == (4, 1) and trainer.devices == 4
    assert strategy._save_distributed_checkpoint and strategy.sharded_checkpoints  # a shard per GPU, written in parallel
    assert trainer.gradient_clip_val == 1.0 and trainer.precision == "bf16-mixed"
    assert model.config.depth == 32 and data.batch_size == 4 and model.compile_model
    assert model.activation_checkpointing.mode == "none"  # flightmind plan: ≈ 45 GiB per GPU without it


class ShardedRoot:
    """Stands in for the FSDP-wrapped model, which alone can compute the norm over all shards."""

    def __init__(self):
        self.clipped_at = []

    def clip_grad_norm_(self, max_norm):
        self.clipped_at.append(max_norm)
        return torch.tensor(3.0)


def test_gradient_clipping_under_fsdp_goes_through_the_sharded_root():
    module = PretrainModule(shape=GPTConfig(depth=2, vocab_size=256, max_seq_len=32))
    strategy = FSDPStrategy()
    strategy.model = root = ShardedRoot()
    module._trainer = SimpleNamespace(
        strategy=strategy,
        fit_loop=SimpleNamespace(_should_accumulate=lambda: False),
        _logger_connector=SimpleNamespace(should_update_logs=False),
    )
    module.configure_gradient_clipping(optimizer=None, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
    assert root.clipped_at == [1.0]


def gradients(**kwargs) -> tuple[dict[str, torch.Tensor], list[str]]:
    torch.manual_seed(0)
    module = PretrainModule(shape=GPTConfig(depth=2, vocab_size=256, max_seq_len=32), **kwargs)
    module.configure_model()
    torch.manual_seed(1)
    module.loss(torch.randint(0, 256, (2, 33))).backward()
    return {name: p.grad for name, p in module.named_parameters()}, list(module.state_dict())


def test_activation_checkpointing_recomputes_the_same_gradients_and_keeps_checkpoint_keys():
    plain, plain_keys = gradients()
    checkpointed, checkpointed_keys = gradients(activation_checkpointing=True)
    assert checkpointed_keys == plain_keys
    assert len(checkpointed) == len(plain)
    for (name, grad), expected in zip(checkpointed.items(), plain.values()):
        assert "_checkpoint_wrapped_module" in name or not name.startswith("model.blocks")
        torch.testing.assert_close(grad, expected, atol=1e-6, rtol=1e-5, msg=name)


def test_compiled_module_keeps_checkpoint_keys():
    plain = PretrainModule(shape=GPTConfig(depth=2, vocab_size=256, max_seq_len=32))
    plain.configure_model()
    compiled = PretrainModule(shape=GPTConfig(depth=2, vocab_size=256, max_seq_len=32), compile=True)
    compiled.configure_model()
    assert list(compiled.state_dict()) == list(plain.state_dict())
    assert not any("_orig_mod" in key for key in compiled.state_dict())


def test_weight_decay_groups_survive_fsdp_flattening_the_parameters():
    module = PretrainModule(shape=GPTConfig(depth=2, vocab_size=256, max_seq_len=32))
    module.configure_model()
    matrices = {id(p) for p in module.parameters() if p.dim() >= 2}
    for p in module.parameters():  # what FSDP (use_orig_params) does: 1-dim views of the shard
        p.data = p.data.flatten()
    module._trainer = SimpleNamespace(max_steps=10)
    decay, no_decay = module.configure_optimizers()["optimizer"].param_groups
    assert {id(p) for p in decay["params"]} == matrices and decay["weight_decay"] == 0.1
    assert len(no_decay["params"]) == 2 * 2 + 1


def test_the_compiled_model_and_loss_are_what_a_training_step_runs(monkeypatch):
    graphs = []

    def backend(graph_module, example_inputs):  # records what dynamo captured, runs it eagerly
        graphs.append(graph_module.code)
        return graph_module.forward

    compile_fn, module_compile = torch.compile, torch.nn.Module.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: compile_fn(fn, backend=backend))
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kwargs: module_compile(self, backend=backend))
    torch._dynamo.reset()
    module = PretrainModule(shape=GPTConfig(depth=2, vocab_size=256, max_seq_len=32), compile=True)
    module.configure_model()
    module.loss(torch.randint(0, 256, (2, 33))).backward()
    # Per-block compile: the blocks' graphs hold attention; the embedding stays eager.
    assert any("scaled_dot_product_attention" in code for code in graphs)
    assert not any("embed" in code for code in graphs)
    assert any("cross_entropy" in code for code in graphs)  # the loss
