"""Small models and files for the interop tests: random FlightMind GPTs and random transformers Llamas."""

import torch

from flightmind.model import GPT, GPTConfig
from tests.helpers import write_checkpoint

# Grouped-query attention (4 query heads of 32 channels, 2 key/value heads), an untied head, and 640
# embedding rows for a 512-token tokenizer (rows past the tokenizer, as a rounded vocabulary has).
GQA_UNTIED = dict(depth=2, head_size=32, n_kv_head=2, tie_embeddings=False, vocab_size=640, max_seq_len=128)
TIED = dict(depth=2, vocab_size=512, max_seq_len=128)  # the default shape: one head of 128, tied head
SHAPES = {"gqa_untied": GQA_UNTIED, "tied": TIED}


def random_gpt(shape: dict, seed: int = 0) -> GPT:
    """A GPT whose norm weights are random too, so that a swapped norm would show."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**shape)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return model


def gpt_checkpoint(path, model, tokenizer_path, **kwargs):
    return write_checkpoint(path, model, tokenizer_json=tokenizer_path.read_text(), **kwargs)


def random_llama(directory, tokenizer_path, *, vocab_size=512, seed=0, **config):
    """A random transformers LlamaForCausalLM (GQA, untied head) saved with the given tokenizer.json."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    settings = dict(
        vocab_size=vocab_size, hidden_size=96, intermediate_size=160, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=500.0,
        tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )
    settings.update(config)
    model = LlamaForCausalLM(LlamaConfig(**settings)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    model.save_pretrained(directory)
    (directory / "tokenizer.json").write_text(tokenizer_path.read_text())
    return model
