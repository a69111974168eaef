"""flightmind.training.parallel in one process: activation checkpointing (full, every k-th block,
selective) gives the gradients of none; the FSDP2 bf16 policy gathers bf16 parameters while the
rotary tables stay fp32 and the shards fp32; per-block compile under DDP makes few graphs where a
whole-model compile is cut at every bucket; per-block compile computes what eager does."""

import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from flightmind.errors import FlightMindError
from flightmind.model import GPT, GPTConfig
from flightmind.training.parallel import ActivationCheckpointing, parallelize
from flightmind.training.pretrain import PretrainModule

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from benchmarks.ddp_graphs import block_gradient_mb, count_graphs  # noqa: E402

CONFIG = GPTConfig(depth=4, vocab_size=256, max_seq_len=32)


@pytest.fixture
def gloo():
    """A one-process gloo group, destroyed afterwards so that later tests see no process group."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def gradients(setting: ActivationCheckpointing) -> tuple[dict[str, torch.Tensor], list[str]]:
    torch.manual_seed(0)
    model = parallelize(GPT(CONFIG), checkpointing=setting)
    torch.manual_seed(1)
    ids = torch.randint(0, 256, (2, 33))
    torch.nn.functional.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten()).backward()
    clean = lambda name: name.replace("._checkpoint_wrapped_module", "")  # noqa: E731
    return {clean(n): p.grad for n, p in model.named_parameters()}, list(model.state_dict())


@pytest.mark.parametrize("setting", [ActivationCheckpointing("full"), ActivationCheckpointing("full", every=2),
                                     ActivationCheckpointing("selective")], ids=["full", "every 2nd", "selective"])
def test_activation_checkpointing_recomputes_the_same_gradients(setting):
    plain, plain_keys = gradients(ActivationCheckpointing())
    checkpointed, keys = gradients(setting)
    assert keys == plain_keys  # checkpoint keys unchanged
    for name, expected in plain.items():
        torch.testing.assert_close(checkpointed[name], expected, atol=1e-6, rtol=1e-5, msg=name)


def test_checkpointing_settings():
    assert ActivationCheckpointing("full", every=2).blocks(4) == [1, 3]
    assert ActivationCheckpointing("selective").blocks(3) == [0, 1, 2]
    assert ActivationCheckpointing().blocks(3) == []
    assert ActivationCheckpointing.of(True) == ActivationCheckpointing("full")
    assert ActivationCheckpointing.of({"mode": "selective"}) == ActivationCheckpointing("selective")
    with pytest.raises(FlightMindError, match="mode must be one of"):
        ActivationCheckpointing("some")
    with pytest.raises(FlightMindError, match="every must be"):
        ActivationCheckpointing("full", every=0)
    model = PretrainModule(shape=CONFIG, activation_checkpointing={"mode": "full", "every": 2})
    assert model.hparams.activation_checkpointing == {"mode": "full", "every": 2}  # plain: weights_only loads


def test_fsdp2_gathers_bf16_parameters_and_keeps_rope_and_shards_fp32(gloo):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    mesh = init_device_mesh("cpu", (1, 1), mesh_dim_names=("data_parallel", "tensor_parallel"))
    model = parallelize(GPT(CONFIG), mesh, precision="bf16-mixed")
    assert isinstance(model, FSDPModule) and all(isinstance(b, FSDPModule) for b in model.blocks)
    assert all(isinstance(p, DTensor) and p.dtype == torch.float32 for p in model.parameters())
    seen = {}
    model.blocks[0].attn.q.register_forward_hook(lambda m, i, o: seen.update(weight=m.weight.dtype, input=i[0].dtype))
    model(torch.randint(0, 256, (1, 8)))
    assert seen == {"weight": torch.bfloat16, "input": torch.bfloat16}
    assert model.rope_cos.dtype == model.rope_sin.dtype == torch.float32


def test_a_tensor_parallel_mesh_is_refused_with_the_fix():
    from flightmind.training.parallel import data_parallel_mesh

    class Mesh:
        mesh_dim_names, shape = ("data_parallel", "tensor_parallel"), (1, 2)

        def size(self):
            return 2

        def __getitem__(self, name):
            return type("Sub", (), {"size": lambda self: 2})()

    with pytest.raises(FlightMindError, match="tensor_parallel_size: 1"):
        data_parallel_mesh(Mesh())


def test_per_block_compile_keeps_the_ddp_graph_whole_where_a_whole_model_compile_is_cut(gloo):
    block_mb = block_gradient_mb(CONFIG)
    whole_small_buckets = count_graphs(CONFIG, per_block=False, bucket_cap_mb=1)
    per_block = count_graphs(CONFIG, per_block=True, bucket_cap_mb=2 * block_mb)
    # A whole-model compile is cut at every 1 MiB bucket: more graphs than blocks. Per block: one
    # block's graph, reused by every block, cut once by DDP's 1 MiB first bucket.
    assert whole_small_buckets > CONFIG.n_layer
    assert per_block <= 2


def test_the_d24_config_buckets_hold_a_whole_block():
    from flightmind.training.lightning_cli import instantiate_config

    model, _, trainer = instantiate_config("-c", str(REPO / "configs" / "h100x4_d24.yaml"))
    assert trainer.strategy._ddp_kwargs["bucket_cap_mb"] >= block_gradient_mb(model.config)
    assert model.hparams.compile


@pytest.mark.slow
def test_per_block_compile_computes_what_eager_does():
    """Inductor on the CPU (tens of seconds): the loss and gradients of a compiled training step."""
    def step(compile: bool):
        torch._dynamo.reset()
        torch.manual_seed(0)
        module = PretrainModule(shape=GPTConfig(depth=2, vocab_size=256, max_seq_len=32), compile=compile)
        module.configure_model()
        torch.manual_seed(1)
        loss = module.loss(torch.randint(0, 256, (2, 33)))
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in module.named_parameters()}

    eager_loss, eager_grads = step(False)
    compiled_loss, compiled_grads = step(True)
    torch.testing.assert_close(compiled_loss, eager_loss, atol=1e-5, rtol=1e-5)
    for name, grad in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)
