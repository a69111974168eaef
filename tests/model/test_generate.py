import pytest
import torch

from flightmind.model import GPT, GPTConfig
from flightmind.model.generate import generate, sample_next


def tiny_model(max_seq_len: int = 32, depth: int = 2) -> GPT:
    """A random GPT whose next token depends on the context, not only on the last token.

    At initialization the attention writes little into the residual stream, so greedy decoding
    would barely notice a broken cache; larger value and output projections make it matter.
    """
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(depth, vocab_size=64, max_seq_len=max_seq_len)).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.v.weight.mul_(10)
            block.attn.o.weight.mul_(10)
    return model


def recomputed_greedy(model: GPT, prompt: list[int], max_new_tokens: int) -> list[int]:
    """The reference: a full forward pass over the context for every token.

    The context is the whole prefix until it would exceed max_seq_len; then it restarts on the last
    max_seq_len // 2 tokens (the documented rule of `generate`).
    """
    window = model.config.max_seq_len
    tokens, start = list(prompt), 0
    for _ in range(max_new_tokens):
        if len(tokens) - start > window:
            start = len(tokens) - window // 2
        with torch.no_grad():
            tokens.append(int(model(torch.tensor([tokens[start:]]))[0, -1].argmax()))
    return tokens[len(prompt) :]


def test_greedy_is_argmax_and_stop_ids_end_generation():
    model = tiny_model()
    prompt = [5, 9, 11]
    tokens = list(generate(model, prompt, 6))
    assert len(tokens) == 6
    context = torch.tensor([prompt + tokens[:2]])
    assert tokens[2] == int(model(context)[0, -1].argmax())
    stop = tokens[-1]
    assert list(generate(model, prompt, 6, stop_ids={stop})) == tokens[: tokens.index(stop)]


@pytest.mark.parametrize(
    ("prompt", "max_new_tokens"),
    [
        pytest.param([7], 20, marks=pytest.mark.slow),  # within the window
        pytest.param([3, 1, 4, 1, 5, 9, 2, 6], 24, marks=pytest.mark.slow),  # fills the window exactly (8 + 24 = 32)
        ([2, 7, 1, 8], 90),  # past max_seq_len: the context restarts several times
        (list(range(40)), 30),  # a prompt longer than the window
    ],
)
def test_cached_greedy_equals_recomputing_the_prefix(prompt, max_new_tokens):
    model = tiny_model(max_seq_len=32, depth=4)
    assert list(generate(model, prompt, max_new_tokens)) == recomputed_greedy(model, prompt, max_new_tokens)


def test_cached_sampling_equals_uncached_sampling():
    model = tiny_model()
    kwargs = dict(temperature=0.9, top_k=20, top_p=0.95)
    cached = list(generate(model, [1, 2, 3], 60, generator=torch.Generator().manual_seed(7), **kwargs))
    uncached = list(generate(model, [1, 2, 3], 60, generator=torch.Generator().manual_seed(7), use_cache=False, **kwargs))
    assert cached == uncached and len(cached) == 60


def test_top_k_and_top_p_restrict_the_choice():
    logits = torch.tensor([0.0, 3.0, 2.9, -1.0])
    picks = {sample_next(logits, temperature=1.0, top_k=2, generator=torch.Generator().manual_seed(s)) for s in range(50)}
    assert picks == {1, 2}
    picks = {sample_next(logits, temperature=1.0, top_p=0.01, generator=torch.Generator().manual_seed(s)) for s in range(20)}
    assert picks == {1}


def test_seeded_sampling_is_reproducible():
    model = tiny_model()

    def sample(seed):
        return list(generate(model, [1, 2], 10, temperature=1.0, generator=torch.Generator().manual_seed(seed)))

    assert sample(3) == sample(3)
    assert sample(3) != sample(4)


def test_empty_prompt_is_an_error():
    with pytest.raises(ValueError, match="at least one token"):
        list(generate(tiny_model(), [], 3))


# -- text in, text out: `flightmind generate` on a checkpoint that `fit` wrote ------------------


@pytest.mark.slow
def test_generate_command_loads_a_fit_checkpoint_and_continues_greedily(smoke_run, capsys):
    from flightmind.cli import main
    from flightmind.model.checkpoint import load_trained
    from flightmind.model.generate import complete

    cwd, _ = smoke_run
    ckpt = cwd / "checkpoints" / "smoke" / "step_20.ckpt"
    prompt = "A METAR report showing TSRA indicates"
    args = ["generate", "--ckpt", str(ckpt), "--prompt", prompt, "--max-new-tokens", "40", "--device", "cpu"]
    assert main([*args, "--temperature", "0"]) == 0
    printed = capsys.readouterr().out
    model, tokenizer = load_trained(ckpt)  # the tokenizer travels in the checkpoint
    expected = complete(model, tokenizer, prompt, 40, temperature=0.0, use_cache=False).text
    assert printed == prompt + expected + "\n"
    assert main([*args, "--temperature", "0", "--stream"]) == 0
    assert capsys.readouterr().out == printed


@pytest.mark.slow
def test_generate_command_sampling_is_reproducible_with_a_seed(smoke_run, capsys):
    from flightmind.cli import main

    cwd, _ = smoke_run
    args = ["generate", "--ckpt", str(cwd / "checkpoints" / "smoke" / "step_20.ckpt"), "--prompt", "On approach",
            "--max-new-tokens", "30", "--temperature", "1.0", "--top-k", "100", "--device", "cpu"]
    outputs = []
    for seed in ("5", "5", "6"):
        assert main([*args, "--seed", seed]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] != outputs[2]


def test_generate_command_errors_name_the_problem(tmp_path, capsys):
    from flightmind.cli import main
    from tests.helpers import tiny_gpt, write_checkpoint

    assert main(["generate", "--ckpt", str(tmp_path / "none.ckpt"), "--prompt", "x"]) == 2
    assert "none.ckpt does not exist" in capsys.readouterr().err
    not_a_checkpoint = tmp_path / "x.ckpt"
    torch.save({"weights": 1}, not_a_checkpoint)
    assert main(["generate", "--ckpt", str(not_a_checkpoint), "--prompt", "x"]) == 2
    assert "not a FlightMind checkpoint" in capsys.readouterr().err
    bare = write_checkpoint(tmp_path / "bare.ckpt", tiny_gpt())  # no tokenizer inside
    assert main(["generate", "--ckpt", str(bare), "--prompt", "x"]) == 2
    assert "bare.ckpt does not hold its tokenizer: pass --tokenizer" in capsys.readouterr().err


def test_streamed_text_equals_the_decoded_tokens_with_split_characters(prepared_dir):
    from flightmind.contracts import load_tokenizer
    from flightmind.model.generate import TextStream, stop_ids
    from flightmind.contracts import END

    tokenizer = load_tokenizer(prepared_dir / "tokenizer.json")
    text = "Wind 270° at 15 kt ✈ — cleared to land"
    ids = tokenizer.encode(text).ids
    assert len(ids) > len(text.split())  # multi-byte characters span several tokens
    stream = TextStream(tokenizer)
    pieces = [stream.push(token) for token in ids] + [stream.flush()]
    assert "".join(pieces) == text and not any("\ufffd" in piece for piece in pieces)
    assert stop_ids(tokenizer) == {tokenizer.token_to_id("<|endoftext|>"), tokenizer.token_to_id(END)}


def test_a_chat_prompt_is_what_fine_tuning_asks_the_assistant_with(chat_tokenizer_path):
    from flightmind.data.chat import DEFAULT_SYSTEM_PROMPT, ChatTemplate, record_messages
    from flightmind.contracts import load_tokenizer
    from flightmind.generate import chat_prompt

    tokenizer = load_tokenizer(chat_tokenizer_path)
    record = {"prompt": "turn heading three six zero", "response": '{"action": "heading", "value": 360}'}
    scored = ChatTemplate(tokenizer).prompt(record_messages(record, system_prompt=DEFAULT_SYSTEM_PROMPT))
    assert chat_prompt(tokenizer, record["prompt"], DEFAULT_SYSTEM_PROMPT) == scored
    assert tokenizer.decode(scored, skip_special_tokens=False) == (
        f"<|system|>{DEFAULT_SYSTEM_PROMPT}<|end|><|user|>turn heading three six zero<|end|><|assistant|>"
    )
