import pytest
import torch

from flightmind.errors import FlightMindError
from flightmind.model import GPT, GPTConfig
from flightmind.model.lora import (
    DEFAULT_TARGETS,
    LoRALinear,
    apply_lora,
    count_parameters,
    lora_layers,
    mark_only_lora_as_trainable,
    merge_lora_weights,
)


def tiny_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig.from_depth(2, vocab_size=96, max_seq_len=64))


def adapted(seed: int = 0, **kwargs) -> GPT:
    model = tiny_gpt(seed)
    apply_lora(model, r=4, alpha=8, **kwargs)
    mark_only_lora_as_trainable(model)
    return model


def randomize_b(model: GPT) -> None:
    """Give every adapter a non-zero B, as training would."""
    with torch.no_grad():
        for _, _, layer in lora_layers(model):
            layer.lora_B.normal_(std=0.05)


def test_default_targets_wrap_every_attention_and_mlp_projection():
    model = adapted()
    wrapped = sorted(f"{parent_name}.{name}" for parent_name, parent in model.named_modules()
                     for name, child in parent.named_children() if isinstance(child, LoRALinear))
    expected = sorted(f"blocks.{i}.{'attn' if t in 'qkvo' else 'mlp'}.{t}" for i in range(2) for t in DEFAULT_TARGETS)
    assert wrapped == expected
    layer = model.blocks[0].mlp.down
    assert layer.lora_A.shape == (4, 128 * 4) and layer.lora_B.shape == (128, 4) and layer.scaling == 2.0


def test_configurable_targets_and_unknown_target_is_a_clear_error():
    model = adapted(targets=["q", "v"])
    assert sum(1 for _ in lora_layers(model)) == 2 * 2
    assert not isinstance(model.blocks[0].attn.k, LoRALinear)
    with pytest.raises(FlightMindError, match="unknown LoRA target.*'qkv'.*choose among q, k, v, o, gate, up, down"):
        apply_lora(tiny_gpt(), r=4, alpha=8, targets=["qkv"])


def test_only_lora_tensors_require_grad():
    model = adapted()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.endswith(("lora_A", "lora_B")) for name in trainable)
    assert len(trainable) == 2 * 2 * len(DEFAULT_TARGETS)
    assert not model.embed.weight.requires_grad and not model.blocks[0].attn.q.weight.requires_grad


def test_a_is_kaiming_b_is_zero_so_the_adapted_model_starts_equal_to_the_base():
    base, model = tiny_gpt(), adapted()
    layer = model.blocks[1].attn.o
    assert torch.count_nonzero(layer.lora_A) == layer.lora_A.numel()
    bound = 1 / layer.in_features**0.5  # kaiming_uniform_(a=√5) on fan_in
    assert layer.lora_A.abs().max() <= bound and layer.lora_A.std() > bound / 3
    assert torch.count_nonzero(layer.lora_B) == 0
    idx = torch.randint(0, 96, (2, 24), generator=torch.Generator().manual_seed(1))
    assert torch.equal(model(idx), base(idx))


def test_adapter_output_is_scaled_b_a_x():
    torch.manual_seed(0)
    base = torch.nn.Linear(8, 6, bias=False)
    layer = LoRALinear(base, r=2, alpha=6)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 8)
    torch.testing.assert_close(layer(x), x @ base.weight.T + 3.0 * (x @ layer.lora_A.T @ layer.lora_B.T))
    assert layer.weight is base.weight  # shared, not copied


def test_merged_logits_equal_unmerged_and_keys_equal_the_plain_gpt():
    model = adapted(seed=3).eval()
    randomize_b(model)
    idx = torch.randint(0, 96, (2, 40), generator=torch.Generator().manual_seed(2))
    unmerged = model(idx)
    assert not torch.allclose(unmerged, tiny_gpt(3)(idx), atol=1e-3)  # the adapters do change the output
    merge_lora_weights(model)
    assert not list(lora_layers(model))
    torch.testing.assert_close(model(idx), unmerged, atol=1e-5, rtol=1e-5)
    assert list(model.state_dict()) == list(tiny_gpt().state_dict())
    plain = tiny_gpt()
    plain.load_state_dict(model.state_dict())  # loads with no LoRA code
    torch.testing.assert_close(plain(idx), unmerged, atol=1e-5, rtol=1e-5)


def test_merge_computes_w_plus_scaled_b_a():
    model = adapted(seed=4)
    randomize_b(model)
    layer = model.blocks[0].mlp.gate
    expected = layer.weight + (8 / 4) * layer.lora_B @ layer.lora_A
    merge_lora_weights(model)
    torch.testing.assert_close(model.blocks[0].mlp.gate.weight, expected)


def test_d24_rank_16_trains_about_one_percent_counted_on_meta():
    with torch.device("meta"):
        model = GPT(GPTConfig.from_depth(24))
        apply_lora(model, r=16, alpha=32)
    mark_only_lora_as_trainable(model)
    trainable, total = count_parameters(model)
    # Per block: 4 attention projections of 16·(1536 + 1536) and 3 MLP ones of 16·(1536 + 6144).
    assert trainable == 24 * (4 * 16 * 3072 + 3 * 16 * 7680)
    assert 0.01 <= trainable / total <= 0.015
