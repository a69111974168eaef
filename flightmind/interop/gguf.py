"""One GGUF file for llama.cpp: llama architecture metadata, the byte-level BPE tokenizer, the weights.

llama.cpp's llama architecture rotates adjacent channel pairs (RoPE "normal" mode) where FlightMind and
Hugging Face rotate the two halves of each head, so q and k rows are permuted per head as llama.cpp's
own ``convert_hf_to_gguf.py`` does: pair (i, i + D/2) becomes (2i, 2i + 1); attention scores are
unchanged. The tokenizer is declared as GPT-2's byte-level BPE (``pre = "gpt-2"``), which is what
``flightmind prepare`` trains; llama.cpp would refuse an undeclared pre-tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from flightmind.atomic import replace_with
from flightmind.contracts import END, EOT, check_tokenizer
from flightmind.errors import FlightMindError
from flightmind.interop.hf import chat_template
from flightmind.model.config import GPTConfig

GGUF_DTYPES = ("float32", "float16", "bfloat16", "q8_0")
PRE_TOKENIZER = "gpt-2"  # llama.cpp's name for GPT-2's split regex (LLAMA_VOCAB_PRE_TYPE_GPT2)

# FlightMind key → GGUF tensor name; a block's keys under blocks.N. → blk.N.
MODEL_TENSORS = {"embed.weight": "token_embd.weight", "norm.weight": "output_norm.weight", "head.weight": "output.weight"}
BLOCK_TENSORS = {
    "attn.q.weight": "attn_q.weight",
    "attn.k.weight": "attn_k.weight",
    "attn.v.weight": "attn_v.weight",
    "attn.o.weight": "attn_output.weight",
    "mlp.gate.weight": "ffn_gate.weight",
    "mlp.up.weight": "ffn_up.weight",
    "mlp.down.weight": "ffn_down.weight",
    "attn_norm.weight": "attn_norm.weight",
    "mlp_norm.weight": "ffn_norm.weight",
}


def gguf_module():
    try:
        import gguf
    except ImportError:
        raise FlightMindError("GGUF export needs the gguf package: pip install 'flightmind[gguf]'") from None
    return gguf


def tensor_name(key: str) -> str:
    if key in MODEL_TENSORS:
        return MODEL_TENSORS[key]
    _, layer, rest = key.split(".", 2)
    return f"blk.{layer}.{BLOCK_TENSORS[rest]}"


def interleave_rope(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """q or k projection rows reordered per head from half-split to adjacent-pair RoPE (as llama.cpp's
    converter permutes a Hugging Face Llama)."""
    rows = weight.size(0)
    return weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


def gguf_tensors(state: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, np.ndarray]:
    """GGUF name → float32 array (PyTorch's row-major shape; GGUF lists the dimensions reversed)."""
    tensors = {}
    for key, value in state.items():
        value = value.detach().to(torch.float32)
        if key.endswith("attn.q.weight"):
            value = interleave_rope(value, config.n_head)
        elif key.endswith("attn.k.weight"):
            value = interleave_rope(value, config.n_kv_head)
        tensors[tensor_name(key)] = value.contiguous().numpy()
    return tensors


def vocabulary(tokenizer: Tokenizer, rows: int) -> tuple[list[str], list[int], list[str]]:
    """Tokens, token types and merges as llama.cpp's BPE ("gpt2") vocabulary holds them, padded with
    unused tokens up to the embedding's ``rows`` (llama.cpp sizes the embedding by the token list)."""
    gguf = gguf_module()
    data = json.loads(tokenizer.to_str())
    model, pre = data["model"], data.get("pre_tokenizer") or {}
    if model.get("type") != "BPE" or pre.get("type") != "ByteLevel" or not pre.get("use_regex", True) or data.get("normalizer"):
        found = f"model {model.get('type')}, pre-tokenizer {pre.get('type')}, normalizer {(data.get('normalizer') or {}).get('type')}"
        raise FlightMindError(
            f"GGUF export writes GPT-2 style byte-level BPE tokenizers (what `flightmind prepare` trains); this one has "
            f"{found}: export with --format hf and convert with llama.cpp's convert_hf_to_gguf.py"
        )
    by_id = {i: t for t, i in tokenizer.get_vocab(with_added_tokens=True).items()}
    special = {t["id"]: t["special"] for t in data.get("added_tokens", [])}
    tokens, types = [], []
    for i in range(rows):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(by_id[i])
        if i in special:
            types.append(gguf.TokenType.CONTROL if special[i] else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return tokens, [int(t) for t in types], merges


def _encode(gguf, array: np.ndarray, dtype: str):
    """(data, raw dtype) of one tensor: vectors (the norms) stay float32, as llama.cpp's converter keeps them."""
    if array.ndim == 1 or dtype == "float32":
        return array, None
    if dtype == "float16":
        return array.astype(np.float16), None
    kind = gguf.GGMLQuantizationType.BF16 if dtype == "bfloat16" else gguf.GGMLQuantizationType.Q8_0
    if kind == gguf.GGMLQuantizationType.Q8_0 and array.shape[-1] % 32:
        return array.astype(np.float16), None  # Q8_0 blocks are 32 values of a row
    return gguf.quants.quantize(array, kind), kind


def write_gguf(
    state: dict[str, torch.Tensor],
    config: GPTConfig,
    tokenizer: Tokenizer,
    path: str | Path,
    *,
    dtype: str = "float16",
    system_prompt: str,
    name: str = "FlightMind",
) -> Path:
    """Write ``path`` (a .gguf file) atomically; ``state`` is a plain GPT state dict (adapters merged)."""
    gguf = gguf_module()
    path = Path(path)
    if path.suffix != ".gguf" or path.is_dir():
        raise FlightMindError(f"--out {path}: GGUF export writes one file; name it FILE.gguf")
    if dtype not in GGUF_DTYPES:
        raise FlightMindError(f"dtype {dtype!r} is not one of {', '.join(GGUF_DTYPES)} for GGUF")
    check_tokenizer(tokenizer, "the model's tokenizer")
    tokens, types, merges = vocabulary(tokenizer, config.vocab_size)
    tensors = gguf_tensors(state, config)
    file_type = {
        "float32": gguf.LlamaFileType.ALL_F32,
        "float16": gguf.LlamaFileType.MOSTLY_F16,
        "bfloat16": gguf.LlamaFileType.MOSTLY_BF16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[dtype]
    eot, end = tokenizer.token_to_id(EOT), tokenizer.token_to_id(END)

    def write(tmp: Path) -> None:
        writer = gguf.GGUFWriter(str(tmp), "llama")
        writer.add_name(name)
        writer.add_file_type(file_type)
        if dtype == "q8_0":
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writer.add_context_length(config.max_seq_len)
        writer.add_embedding_length(config.dim)
        writer.add_block_count(config.n_layer)
        writer.add_feed_forward_length(config.hidden_dim)
        writer.add_head_count(config.n_head)
        writer.add_head_count_kv(config.n_kv_head)
        writer.add_key_length(config.head_size)
        writer.add_value_length(config.head_size)
        writer.add_layer_norm_rms_eps(config.norm_eps)
        writer.add_rope_freq_base(config.rope_base)
        writer.add_rope_dimension_count(config.head_size)
        writer.add_vocab_size(config.vocab_size)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(PRE_TOKENIZER)
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges(merges)
        writer.add_bos_token_id(eot)
        writer.add_eos_token_id(eot)
        writer.add_eot_token_id(end)  # a chat turn ends generation too
        writer.add_pad_token_id(eot)
        writer.add_add_bos_token(True)  # every prompt starts after <|endoftext|>, as in FlightMind
        writer.add_add_eos_token(False)
        writer.add_chat_template(chat_template(system_prompt))
        for tensor, array in tensors.items():
            data, raw = _encode(gguf, array, dtype)
            writer.add_tensor(tensor, data, raw_dtype=raw)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    path.parent.mkdir(parents=True, exist_ok=True)
    replace_with(path, write)
    return path
