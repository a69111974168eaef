import numpy as np
import pytest
import torch

from flightmind.data.sequences import PackedSequences, ResumableDataLoader, StreamSampler
from flightmind.errors import FlightMindError


@pytest.fixture
def shard(tmp_path):
    path = tmp_path / "train.bin"
    np.arange(1001, dtype=np.uint16).tofile(path)
    return path


def test_windows_are_seq_len_plus_one_and_share_one_token(shard):
    data = PackedSequences(shard, seq_len=100)
    assert len(data) == 10  # (1001 - 1) // 100
    first, second = data[0], data[1]
    assert first.dtype == torch.int64 and first.shape == (101,)
    assert first.tolist() == list(range(0, 101))
    assert second[0] == first[-1]
    # Every token after the first is a target exactly once.
    targets = torch.cat([data[i][1:] for i in range(len(data))])
    assert targets.tolist() == list(range(1, 1001))


def test_memmap_opens_lazily_and_never_pickles(shard):
    import pickle

    data = PackedSequences(shard, seq_len=100)
    assert data._tokens is None
    data[3]
    assert data._tokens is not None
    assert pickle.loads(pickle.dumps(data))._tokens is None


def test_too_small_shard_is_a_clear_error(tmp_path):
    path = tmp_path / "tiny.bin"
    np.arange(50, dtype=np.uint16).tofile(path)
    with pytest.raises(FlightMindError, match="fewer than one sequence of 101"):
        PackedSequences(path, seq_len=100)


def order(shard, length, **kwargs):
    return list(StreamSampler(PackedSequences(shard, 100), length, **kwargs))


def test_order_is_a_seeded_permutation_per_pass(shard):
    first = order(shard, 30, seed=1)
    assert sorted(first[:10]) == list(range(10)) and sorted(first[10:20]) == list(range(10))
    assert first[:10] != first[10:20]  # a new order each pass
    assert first == order(shard, 30, seed=1)
    assert first != order(shard, 30, seed=2)
    assert order(shard, 12, seed=1, shuffle=False) == [*range(10), 0, 1]


def test_ranks_take_disjoint_interleaved_positions(shard):
    whole = order(shard, 10, seed=3)
    rank0 = order(shard, 5, seed=3, rank=0, world_size=2)
    rank1 = order(shard, 5, seed=3, rank=1, world_size=2)
    assert rank0 == whole[0::2] and rank1 == whole[1::2]
    assert not set(rank0) & set(rank1)


def test_loader_state_resumes_where_it_stopped(shard):
    data = PackedSequences(shard, 100)

    def loader():
        return ResumableDataLoader(data, batch_size=2, sampler=StreamSampler(data, 16, seed=0, rank=1, world_size=2))

    full = [b[:, 0].tolist() for b in loader()]
    interrupted = loader()
    it = iter(interrupted)
    head = [next(it)[:, 0].tolist() for _ in range(3)]
    state = interrupted.state_dict()
    assert state == {"position": 3 * 2 * 2}  # global samples consumed by both ranks
    resumed = loader()
    resumed.load_state_dict(state)
    assert len(resumed) == 8  # Lightning counts the consumed batches itself
    assert head + [b[:, 0].tolist() for b in resumed] == full
