"""The attention kernel setting: validated, applied around SDPA, reported as the kernel that ran,
refused with the fix where it cannot run, and not part of the shape a checkpoint must match."""

from types import SimpleNamespace

import pytest
import torch
from torch.nn.attention import SDPBackend

from flightmind.errors import FlightMindError
from flightmind.model import GPT, GPTConfig
from flightmind.model.attention import backends, kernel_used
from flightmind.training.causal_lm import log_attention_kernel

CPU = torch.device("cpu")


def test_the_setting_is_validated_and_auto_leaves_the_cpu_to_pytorch():
    with pytest.raises(FlightMindError, match="model.attention must be one of auto, cudnn, flash, efficient, math"):
        GPTConfig(attention="fastest")
    assert backends("auto", CPU) is None
    assert backends("cudnn", CPU) == [SDPBackend.CUDNN_ATTENTION]


def test_cudnn_goes_first_on_hopper_with_cudnn_newer_than_9_15(monkeypatch):
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.backends.cudnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91600)
    assert backends("auto", cuda)[0] == SDPBackend.CUDNN_ATTENTION
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91002)  # older cuDNN: PyTorch's own order
    assert backends("auto", cuda) is None
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91600)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))  # an A100
    assert backends("auto", cuda) is None


def test_the_kernel_that_ran_is_named():
    assert kernel_used("auto", 4, 4, 32, CPU, torch.float32) == "flash (CPU)"
    assert kernel_used("math", 4, 4, 32, CPU, torch.float32) == "math"
    assert kernel_used("flash", 4, 2, 32, CPU, torch.float32) == "flash (CPU)"  # grouped-query
    with pytest.raises(RuntimeError):
        kernel_used("cudnn", 4, 4, 32, CPU, torch.float32)


def test_a_kernel_that_cannot_run_is_refused_with_the_setting_named():
    trainer = SimpleNamespace(precision_plugin=SimpleNamespace(forward_context=lambda: torch.autocast("cpu", enabled=False)))
    assert log_attention_kernel(GPTConfig(depth=2), CPU, trainer) == "flash (CPU)"
    with pytest.raises(FlightMindError, match="model.shape.attention='efficient': that kernel cannot run here"):
        log_attention_kernel(GPTConfig(depth=2, attention="efficient"), CPU, trainer)


def test_the_chosen_kernel_computes_the_same_attention():
    torch.manual_seed(0)
    model = GPT(GPTConfig(depth=2, vocab_size=256, max_seq_len=32)).eval()
    ids = torch.randint(0, 256, (2, 32))
    reference = model(ids)
    model.config = GPTConfig(depth=2, vocab_size=256, max_seq_len=32, attention="math")
    torch.testing.assert_close(model(ids), reference, atol=1e-5, rtol=1e-5)


def test_a_checkpoint_resumes_under_another_kernel():
    from flightmind.training.pretrain import PretrainModule

    module = PretrainModule(shape=GPTConfig(depth=2, vocab_size=256, max_seq_len=32, attention="flash"))
    module.on_load_checkpoint({"model_config": GPTConfig(depth=2, vocab_size=256, max_seq_len=32).to_dict()})
    with pytest.raises(FlightMindError, match="trained with depth=3"):  # the shape itself is still checked
        module.on_load_checkpoint({"model_config": GPTConfig(depth=3, vocab_size=256, max_seq_len=32).to_dict()})
