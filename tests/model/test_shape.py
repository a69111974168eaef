"""The model's whole shape from GPTConfig: grouped-query attention, head size, MLP width, untied head,
dropout; counts that follow it; the vocabulary rounded from the tokenizer."""

import pytest
import torch
import torch.nn.functional as F

from flightmind.errors import FlightMindError
from flightmind.model import GPT, GPTConfig, KVCache


def counted(config: GPTConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in GPT(config).parameters())


@pytest.mark.parametrize(
    "overrides",
    [{}, {"head_size": 64, "n_kv_head": 1}, {"head_size": 64, "n_kv_head": 2}, {"tie_embeddings": False},
     {"hidden_dim": 700, "dim": 192, "n_layer": 3}, {"n_head": 4, "head_size": 32}],
)
def test_parameter_count_follows_every_field(overrides):
    config = GPTConfig(depth=4, vocab_size=1024, **overrides)
    assert counted(config) == config.num_params()


def test_grouped_query_attention_shrinks_only_the_key_and_value_projections():
    full, grouped = GPTConfig(depth=4, head_size=64), GPTConfig(depth=4, head_size=64, n_kv_head=1)
    assert (full.n_head, full.n_kv_head, grouped.n_kv_head) == (4, 4, 1)
    # Per block, k and v go from 256×256 to 256×64 each.
    assert full.num_params() - grouped.num_params() == 4 * 2 * 256 * (256 - 64)
    assert full.flops_per_token(256) - grouped.flops_per_token(256) == 6 * 4 * 2 * 256 * (256 - 64)
    assert grouped.kv_cache_bytes(batch=1, length=256) == full.kv_cache_bytes(batch=1, length=256) // 4


def test_untied_head_counts_its_own_matrix():
    tied, untied = GPTConfig(depth=4, vocab_size=1024), GPTConfig(depth=4, vocab_size=1024, tie_embeddings=False)
    assert untied.num_params() - tied.num_params() == 1024 * 256
    assert tied.matmul_params() == untied.matmul_params()  # the head is multiplied either way
    model = GPT(untied)
    assert "head.weight" in model.state_dict() and model.head.weight.data_ptr() != model.embed.weight.data_ptr()


@pytest.mark.parametrize(
    "overrides, message",
    [({"n_kv_head": 3}, "n_kv_head=3 must divide model.n_head=2"), ({"dropout": 1.0}, "dropout must be in"),
     ({"head_size": 63}, "must be even"), ({"vocab_size": 70000}, "does not fit the uint16"), ({"depth": 0}, "positive")],
)
def test_impossible_shapes_are_one_clear_error(overrides, message):
    with pytest.raises(FlightMindError, match=message):
        GPTConfig(depth=overrides.pop("depth", 4), **overrides)


@pytest.mark.parametrize("tokens, vocab", [(9051, 9088), (15444, 15488), (32768, 32768), (257, 384)])
def test_an_unset_vocabulary_is_the_tokenizers_rounded_up_to_128(tokens, vocab):
    assert GPTConfig(depth=4).with_vocab(tokens).vocab_size == vocab
    assert GPTConfig(depth=4, vocab_size=32768).with_vocab(tokens).vocab_size == 32768  # set: kept


def context_dependent(config: GPTConfig) -> GPT:
    torch.manual_seed(0)
    model = GPT(config).eval()
    with torch.no_grad():  # make attention matter, so that a broken cache shows
        for block in model.blocks:
            block.attn.v.weight.mul_(10)
            block.attn.o.weight.mul_(10)
    return model


@pytest.mark.parametrize("n_kv_head", [1, 2])
def test_grouped_query_cached_decoding_equals_recomputation(n_kv_head):
    model = context_dependent(GPTConfig(depth=4, head_size=64, n_kv_head=n_kv_head, vocab_size=128, max_seq_len=64))
    tokens = torch.randint(0, 128, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(tokens)
        cache = KVCache(capacity=64)
        pieces = [model(tokens[:, :17], cache)] + [model(tokens[:, t : t + 1], cache) for t in range(17, 40)]
    assert cache.keys[0].shape[1] == n_kv_head  # the cache holds only the key/value heads
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_grouped_query_attention_equals_repeated_key_value_heads():
    """The independent reference: multi-head attention whose k/v weights repeat each group's head."""
    grouped = context_dependent(GPTConfig(depth=2, head_size=32, n_kv_head=1, vocab_size=64, max_seq_len=32))
    full = GPT(GPTConfig(depth=2, head_size=32, vocab_size=64, max_seq_len=32)).eval()
    state = grouped.state_dict()
    for key in list(state):
        if key.endswith(("attn.k.weight", "attn.v.weight")):
            state[key] = state[key].repeat(grouped.config.n_head, 1)
    full.load_state_dict(state)
    tokens = torch.randint(0, 64, (2, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(grouped(tokens), full(tokens), atol=1e-5, rtol=1e-5)


def test_dropout_changes_nothing_in_eval_mode_and_is_reproducible_by_seed_in_training():
    config = GPTConfig(depth=2, vocab_size=64, max_seq_len=32)
    torch.manual_seed(0)
    plain = GPT(config)
    dropped = GPT(GPTConfig(depth=2, vocab_size=64, max_seq_len=32, dropout=0.3))
    dropped.load_state_dict(plain.state_dict())
    tokens = torch.randint(0, 64, (2, 24), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(dropped.eval()(tokens), plain.eval()(tokens))
        dropped.train()
        torch.manual_seed(7)
        first = dropped(tokens)
        torch.manual_seed(7)
        again = dropped(tokens)
        torch.manual_seed(8)
        other = dropped(tokens)
    assert torch.equal(first, again) and not torch.allclose(first, other)
    assert not torch.allclose(first, plain(tokens))
    loss = F.cross_entropy(first.flatten(0, 1), tokens.flatten())
    assert torch.isfinite(loss)
