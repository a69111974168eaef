"""Export to GGUF: every key and tensor llama.cpp's llama loader reads, and a reference forward pass
with llama.cpp's semantics (adjacent-pair RoPE, key/value heads shared by consecutive query heads)
computed from the file alone gives FlightMind's logits."""

import json
import os
import stat

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from flightmind.contracts import load_tokenizer  # noqa: E402
from flightmind.errors import FlightMindError  # noqa: E402
from flightmind.export import export  # noqa: E402
from flightmind.model.generate import generate  # noqa: E402
from tests.helpers import LORA, fine_tuned  # noqa: E402
from tests.interop.helpers import SHAPES, gpt_checkpoint, random_gpt  # noqa: E402

BLOCK_TENSORS = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")


def fields(reader) -> dict:
    return {name: field.contents() for name, field in reader.fields.items()}


def tensors(reader) -> dict[str, np.ndarray]:
    """Every tensor as float64 in PyTorch's row-major shape (dequantized where stored quantized)."""
    out = {}
    for t in reader.tensors:
        data = np.asarray(t.data)
        if t.tensor_type not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            data = gguf.quants.dequantize(data, t.tensor_type)
        out[t.name] = data.astype(np.float64).reshape(list(reversed([int(d) for d in t.shape])))
    return out


def llama_cpp_logits(reader, ids: list[int]) -> np.ndarray:
    """llama.cpp's llama graph in numpy, from the GGUF's metadata and tensors only."""
    kv, w = fields(reader), tensors(reader)
    n_head, n_kv = kv["llama.attention.head_count"], kv["llama.attention.head_count_kv"]
    d, eps, base = kv["llama.rope.dimension_count"], kv["llama.attention.layer_norm_rms_epsilon"], kv["llama.rope.freq_base"]

    def rms(x, weight):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * weight

    angles = np.arange(len(ids))[:, None] * base ** (-np.arange(0, d, 2) / d)[None]
    cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]

    def rope(x):  # (T, H, D): GGML_ROPE_TYPE_NORM rotates channels (2i, 2i+1)
        out = np.empty_like(x)
        out[..., 0::2] = x[..., 0::2] * cos - x[..., 1::2] * sin
        out[..., 1::2] = x[..., 0::2] * sin + x[..., 1::2] * cos
        return out

    T = len(ids)
    x = w["token_embd.weight"][ids]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for n in range(kv["llama.block_count"]):
        b = lambda name: w[f"blk.{n}.{name}.weight"]  # noqa: E731
        h = rms(x, b("attn_norm"))
        q = rope((h @ b("attn_q").T).reshape(T, n_head, d))
        k = np.repeat(rope((h @ b("attn_k").T).reshape(T, n_kv, d)), n_head // n_kv, axis=1)
        v = np.repeat((h @ b("attn_v").T).reshape(T, n_kv, d), n_head // n_kv, axis=1)
        scores = np.einsum("thd,shd->hts", q, k) / np.sqrt(d) + mask
        p = np.exp(scores - scores.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        x = x + np.einsum("hts,shd->thd", p, v).reshape(T, -1) @ b("attn_output").T
        h = rms(x, b("ffn_norm"))
        gate = h @ b("ffn_gate").T
        x = x + ((gate / (1 + np.exp(-gate))) * (h @ b("ffn_up").T)) @ b("ffn_down").T
    head = w.get("output.weight", w["token_embd.weight"])
    return rms(x, w["output_norm.weight"]) @ head.T


@pytest.mark.parametrize("shape", list(SHAPES))
def test_gguf_holds_every_key_and_tensor_llama_cpp_reads(tmp_path, chat_tokenizer_path, shape):
    model = random_gpt(SHAPES[shape])
    c = model.config
    path = tmp_path / "model.gguf"
    export(gpt_checkpoint(tmp_path / "m.ckpt", model, chat_tokenizer_path), path, format="gguf", dtype="float32")
    reader = gguf.GGUFReader(path)
    kv = fields(reader)
    expected = {
        "general.architecture": "llama",
        "llama.context_length": c.max_seq_len,
        "llama.embedding_length": c.dim,
        "llama.block_count": c.n_layer,
        "llama.feed_forward_length": c.hidden_dim,
        "llama.attention.head_count": c.n_head,
        "llama.attention.head_count_kv": c.n_kv_head,
        "llama.attention.key_length": c.head_size,
        "llama.attention.value_length": c.head_size,
        "llama.rope.freq_base": c.rope_base,
        "llama.rope.dimension_count": c.head_size,
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt-2",
        "tokenizer.ggml.bos_token_id": 0,
        "tokenizer.ggml.eos_token_id": 0,
        "tokenizer.ggml.eot_token_id": 4,
        "tokenizer.ggml.add_bos_token": True,
    }
    assert {k: kv.get(k) for k in expected} == expected
    assert kv["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(c.norm_eps)
    tokenizer = load_tokenizer(chat_tokenizer_path)
    vocab = {i: t for t, i in tokenizer.get_vocab().items()}
    tokens, types = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == c.vocab_size  # llama.cpp sizes the embedding by the token list
    assert tokens[: len(vocab)] == [vocab[i] for i in range(len(vocab))]
    assert types[:5] == [gguf.TokenType.CONTROL] * 5 and set(types[5 : len(vocab)]) == {gguf.TokenType.NORMAL}
    assert set(types[len(vocab) :]) <= {gguf.TokenType.UNUSED}
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    assert kv["tokenizer.ggml.merges"] == [m if isinstance(m, str) else " ".join(m) for m in merges] and merges
    assert "<|assistant|>" in kv["tokenizer.chat_template"]

    shapes = {t.name: [int(d) for d in t.shape] for t in reader.tensors}  # GGML order: innermost first
    want = {"token_embd.weight": [c.dim, c.vocab_size], "output_norm.weight": [c.dim]}
    if not c.tie_embeddings:
        want["output.weight"] = [c.dim, c.vocab_size]
    for n in range(c.n_layer):
        want |= {
            f"blk.{n}.attn_norm.weight": [c.dim],
            f"blk.{n}.attn_q.weight": [c.dim, c.attn_dim],
            f"blk.{n}.attn_k.weight": [c.dim, c.kv_dim],
            f"blk.{n}.attn_v.weight": [c.dim, c.kv_dim],
            f"blk.{n}.attn_output.weight": [c.attn_dim, c.dim],
            f"blk.{n}.ffn_norm.weight": [c.dim],
            f"blk.{n}.ffn_gate.weight": [c.dim, c.hidden_dim],
            f"blk.{n}.ffn_up.weight": [c.dim, c.hidden_dim],
            f"blk.{n}.ffn_down.weight": [c.hidden_dim, c.dim],
        }
    assert shapes == want

    # llama.cpp's graph, computed from the file, gives FlightMind's logits and greedy tokens.
    prompt = [0, *tokenizer.encode("contact ground point niner", add_special_tokens=False).ids]
    with torch.no_grad():
        ours = model(torch.tensor([prompt]))[0].double().numpy()
    assert np.abs(llama_cpp_logits(reader, prompt) - ours).max() <= 1e-4
    greedy = list(prompt)
    for _ in range(32):
        greedy.append(int(llama_cpp_logits(reader, greedy)[-1].argmax()))
    assert greedy[len(prompt) :] == list(generate(model, prompt, 32, temperature=0.0))


def test_without_the_q_k_permutation_llama_cpp_would_compute_something_else(tmp_path, chat_tokenizer_path, monkeypatch):
    import flightmind.interop.gguf as writer

    model = random_gpt(SHAPES["gqa_untied"])
    monkeypatch.setattr(writer, "interleave_rope", lambda weight, n_head: weight)
    export(gpt_checkpoint(tmp_path / "m.ckpt", model, chat_tokenizer_path), tmp_path / "m.gguf", format="gguf", dtype="float32")
    prompt = list(range(5, 30))
    with torch.no_grad():
        ours = model(torch.tensor([prompt]))[0].double().numpy()
    assert np.abs(llama_cpp_logits(gguf.GGUFReader(tmp_path / "m.gguf"), prompt) - ours).max() > 1e-3


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "q8_0"])
def test_smaller_dtypes_read_back_close_and_lora_comes_merged(tmp_path, chat_tokenizer_path, dtype):
    model = fine_tuned()
    path = tmp_path / f"m-{dtype}.gguf"
    old = os.umask(0o022)
    try:
        export(gpt_checkpoint(tmp_path / "m.ckpt", model, chat_tokenizer_path, lora=LORA), path, format="gguf", dtype=dtype)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    reader = gguf.GGUFReader(path)
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    assert kinds["output_norm.weight"] == "F32" and kinds["blk.0.attn_norm.weight"] == "F32"
    assert kinds["blk.0.ffn_down.weight"] == {"float16": "F16", "bfloat16": "BF16", "q8_0": "Q8_0"}[dtype]
    prompt = list(range(3, 40))
    with torch.no_grad():
        ours = model(torch.tensor([prompt]))[0].double().numpy()
    assert np.abs(llama_cpp_logits(reader, prompt) - ours).max() <= 0.05


def test_gguf_refuses_what_llama_cpp_would_misread(tmp_path, chat_tokenizer_path):
    from tokenizers import Tokenizer, pre_tokenizers

    model = random_gpt(SHAPES["tied"])
    ckpt = gpt_checkpoint(tmp_path / "m.ckpt", model, chat_tokenizer_path)
    with pytest.raises(FlightMindError, match="name it FILE.gguf"):
        export(ckpt, tmp_path / "out", format="gguf")
    other = Tokenizer.from_file(str(chat_tokenizer_path))
    other.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel()])
    other.save(str(tmp_path / "digits.json"))
    with pytest.raises(FlightMindError, match="GPT-2 style byte-level BPE.*pre-tokenizer Sequence.*convert_hf_to_gguf"):
        export(ckpt, tmp_path / "m.gguf", format="gguf", tokenizer=tmp_path / "digits.json")
    assert not (tmp_path / "m.gguf").exists()
