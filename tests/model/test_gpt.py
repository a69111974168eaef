import math

import pytest
import torch
import torch.nn.functional as F

from flightmind.model import GPT, GPTConfig, KVCache


@pytest.mark.parametrize(
    ("depth", "expected"),
    [(8, 50.3e6), (20, 566e6), (24, 956e6), (32, 2.21e9)],
)
def test_parameter_counts_match_the_spec_on_meta_device(depth, expected):
    config = GPTConfig.from_depth(depth)
    with torch.device("meta"):
        model = GPT(config)
    counted = sum(p.numel() for p in model.parameters())
    assert counted == config.num_params()
    assert abs(counted - expected) / expected < 0.01


def test_shape_follows_depth():
    config = GPTConfig.from_depth(24)
    assert (config.dim, config.n_layer, config.n_head, config.head_size, config.hidden_dim) == (1536, 24, 12, 128, 6144)
    assert GPTConfig.from_depth(2).n_head == 1


def test_flops_per_token_follows_design_formula():
    config = GPTConfig.from_depth(8)
    n_matmul = 16 * 512**2 * 8 + 32768 * 512
    assert config.flops_per_token(2048) == 6 * n_matmul + 12 * 8 * 512 * 2048


def test_no_biases_and_tied_head():
    model = GPT(GPTConfig.from_depth(2, max_seq_len=64))
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())
    # The embedding is the only vocab-sized tensor; rotary tables are not saved.
    assert [k for k, v in model.state_dict().items() if v.shape[0] == 32768] == ["embed.weight"]
    assert not any("rope" in k for k in model.state_dict())


@pytest.mark.parametrize("depth", [2, 4])
def test_first_loss_is_near_ln_vocab(depth):
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(depth, max_seq_len=256))
    tokens = torch.randint(0, 32768, (4, 129))
    with torch.no_grad():
        logits = model(tokens[:, :-1])
    loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
    assert abs(loss.item() - math.log(32768)) < 0.15


def test_attention_is_causal():
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(2, max_seq_len=64)).eval()
    tokens = torch.randint(0, 32768, (1, 32))
    changed = tokens.clone()
    changed[0, 20:] = (changed[0, 20:] + 1) % 32768
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[:, :20], b[:, :20])
    assert not torch.allclose(a[:, 20:], b[:, 20:])


def test_too_long_sequence_is_refused():
    model = GPT(GPTConfig.from_depth(2, max_seq_len=16))
    with pytest.raises(ValueError, match="max_seq_len=16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_cached_chunks_give_the_logits_of_one_full_pass():
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(4, vocab_size=128, max_seq_len=64)).eval()
    idx = torch.randint(0, 128, (2, 40))
    full = model(idx)
    cache = KVCache(capacity=40)
    # A prefill from empty (is_causal), a chunk after it (shifted mask), then single tokens (no mask).
    pieces = [model(idx[:, :17], cache), model(idx[:, 17:30], cache)]
    pieces += [model(idx[:, t : t + 1], cache) for t in range(30, 40)]
    assert cache.length == 40
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_cache_and_context_limits_are_errors():
    model = GPT(GPTConfig.from_depth(2, vocab_size=64, max_seq_len=16))
    with pytest.raises(ValueError, match="max_seq_len=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    cache = KVCache(capacity=8)
    model(torch.zeros(1, 6, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="capacity of 8"):
        model(torch.zeros(1, 3, dtype=torch.long), cache)


def test_training_attention_takes_sdpas_causal_path_without_a_mask(monkeypatch):
    # An explicit mask would rule out the flash kernel; is_causal with no mask keeps it.
    calls = []
    sdpa = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    model = GPT(GPTConfig.from_depth(2, vocab_size=256, max_seq_len=64))
    model(torch.randint(0, 256, (2, 64))).float().mean().backward()
    assert len(calls) == 2 and all(call == {"is_causal": True} for call in calls)
