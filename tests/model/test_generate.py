import torch

from flightmind.model import GPT, GPTConfig
from flightmind.model.generate import generate, sample_next


def test_greedy_is_argmax_and_stop_ids_end_generation():
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(2, vocab_size=64, max_seq_len=32)).eval()
    prompt = [5, 9, 11]
    tokens = list(generate(model, prompt, 6))
    assert len(tokens) == 6
    context = torch.tensor([prompt + tokens[:2]])
    assert tokens[2] == int(model(context)[0, -1].argmax())
    stop = tokens[-1]
    assert list(generate(model, prompt, 6, stop_ids={stop})) == tokens[: tokens.index(stop)]


def test_top_k_and_top_p_restrict_the_choice():
    logits = torch.tensor([0.0, 3.0, 2.9, -1.0])
    picks = {sample_next(logits, temperature=1.0, top_k=2, generator=torch.Generator().manual_seed(s)) for s in range(50)}
    assert picks == {1, 2}
    picks = {sample_next(logits, temperature=1.0, top_p=0.01, generator=torch.Generator().manual_seed(s)) for s in range(20)}
    assert picks == {1}


def test_seeded_sampling_is_reproducible():
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(2, vocab_size=64, max_seq_len=32)).eval()

    def sample(seed):
        return list(generate(model, [1, 2], 10, temperature=1.0, generator=torch.Generator().manual_seed(seed)))

    assert sample(3) == sample(3)
    assert sample(3) != sample(4)
