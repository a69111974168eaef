"""The Hugging Face Llama format, both ways: config.json, weight names, tokenizer files, chat template.

FlightMind's GPT is a Llama (RMSNorm with weights, SwiGLU, no biases, optional grouped-query attention
and untied head), and its RoPE rotates the two halves of each head as transformers' ``rotate_half``
does, so the weights map one to one, q and k unpermuted. What needs care is stated in the config:
RMS epsilon, head size, tied head, BOS/EOS ids. The exported tokenizer puts ``<|endoftext|>`` before
every text it encodes with special tokens, as ``flightmind generate`` does, and its chat template
renders FlightMind's chat turns token for token.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, processors

from flightmind.atomic import replace_with, write_text
from flightmind.contracts import ASSISTANT, END, EOT, MAX_VOCAB_SIZE, SPECIAL_TOKENS, SYSTEM, USER, check_tokenizer
from flightmind.errors import FlightMindError
from flightmind.model.checkpoint import SavedModel, safetensors_torch
from flightmind.model.config import VOCAB_MULTIPLE, GPTConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
DEFAULT_SHARD_BYTES = 5 * 2**30  # transformers' own default shard size (5 GB)
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# FlightMind key ↔ Llama key; a block's keys sit under blocks.N. ↔ model.layers.N.
MODEL_KEYS = {"embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight", "head.weight": "lm_head.weight"}
BLOCK_KEYS = {
    "attn.q.weight": "self_attn.q_proj.weight",
    "attn.k.weight": "self_attn.k_proj.weight",
    "attn.v.weight": "self_attn.v_proj.weight",
    "attn.o.weight": "self_attn.o_proj.weight",
    "mlp.gate.weight": "mlp.gate_proj.weight",
    "mlp.up.weight": "mlp.up_proj.weight",
    "mlp.down.weight": "mlp.down_proj.weight",
    "attn_norm.weight": "input_layernorm.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
}


# ---------------------------------------------------------------------------------------------
# Weight names


def hf_key(key: str) -> str:
    if key in MODEL_KEYS:
        return MODEL_KEYS[key]
    _, layer, rest = key.split(".", 2)  # blocks.N.rest
    return f"model.layers.{layer}.{BLOCK_KEYS[rest]}"


def to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A plain GPT state dict (no LoRA tensors) under Llama's names."""
    return {hf_key(k): v for k, v in state.items()}


def from_hf(state: dict[str, torch.Tensor], config: GPTConfig, source: str | Path) -> dict[str, torch.Tensor]:
    """A Llama state dict under the GPT's names (float32); every expected key must be there."""
    names = {hf_key(k): k for k in _gpt_keys(config)}
    missing = [h for h in names if h not in state]
    if missing:
        raise FlightMindError(
            f"{source} lacks {len(missing)} of the Llama weights its config describes ({', '.join(missing[:3])}): "
            "is the download complete?"
        )
    # lm_head.weight of a tied model, and rotary tables older versions saved, are not weights of the GPT.
    unknown = [k for k in state if k not in names and k != "lm_head.weight" and not k.endswith("rotary_emb.inv_freq")]
    if unknown:
        raise FlightMindError(
            f"{source} holds weights a Llama has not ({', '.join(unknown[:3])}): not a plain Llama checkpoint"
        )
    return {gpt: state[h].to(torch.float32) for h, gpt in names.items()}


def _gpt_keys(config: GPTConfig) -> list[str]:
    keys = ["embed.weight", "norm.weight"] + ([] if config.tie_embeddings else ["head.weight"])
    return keys + [f"blocks.{n}.{k}" for n in range(config.n_layer) for k in BLOCK_KEYS]


# ---------------------------------------------------------------------------------------------
# config.json


def llama_config(config: GPTConfig, tokenizer: Tokenizer, dtype: str) -> dict:
    """config.json of ``LlamaForCausalLM`` for this shape, for transformers 4 and 5 and vLLM alike."""
    eot = tokenizer.token_to_id(EOT)
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,  # embedding rows; rows past the tokenizer are never produced by it
        "hidden_size": config.dim,
        "intermediate_size": config.hidden_dim,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_kv_head,
        "head_dim": config.head_size,  # not always hidden_size / heads: say it
        "hidden_act": "silu",
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,  # LlamaConfig's default (1e-6) is not FlightMind's
        "rope_theta": config.rope_base,  # transformers 4, vLLM, llama.cpp's converter
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_base},  # transformers 5
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "tie_word_embeddings": config.tie_embeddings,  # LlamaConfig's default is untied
        "bos_token_id": eot,  # LlamaConfig's defaults 1/2 are <|system|>/<|user|> here
        "eos_token_id": eot,
        "pad_token_id": eot,
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": dtype,  # transformers 4
        "dtype": dtype,  # transformers 5
    }


def generation_config(tokenizer: Tokenizer) -> dict:
    """Generation stops where ``flightmind generate`` stops: at ``<|endoftext|>`` or ``<|end|>``."""
    eot, end = tokenizer.token_to_id(EOT), tokenizer.token_to_id(END)
    return {"bos_token_id": eot, "eos_token_id": [eot, end], "pad_token_id": eot}


def refuse(source: str | Path, feature: str) -> FlightMindError:
    return FlightMindError(f"{source}: {feature} is not supported: import-hf reads Llama models with RMSNorm, RoPE, "
                           "SwiGLU and no biases (FlightMind's GPT)")


def gpt_config(hf: dict, source: str | Path) -> GPTConfig:
    """The GPT shape of a Llama config.json, or one line naming what FlightMind's GPT does not have."""
    architectures = hf.get("architectures") or ["LlamaForCausalLM"]
    if hf.get("model_type") != "llama" or architectures != ["LlamaForCausalLM"]:
        raise refuse(source, f"architecture {'/'.join(architectures)} (model_type {hf.get('model_type')!r})")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise refuse(source, "biases (attention_bias/mlp_bias)")
    rope = hf.get("rope_parameters") or {}
    if hf.get("rope_scaling") or rope.get("rope_type", "default") != "default":
        kind = (hf.get("rope_scaling") or rope).get("rope_type") or (hf.get("rope_scaling") or {}).get("type")
        raise refuse(source, f"RoPE scaling (rope_type {kind})")
    if hf.get("sliding_window") or hf.get("use_sliding_window"):
        raise refuse(source, f"sliding-window attention (sliding_window {hf.get('sliding_window')})")
    if hf.get("hidden_act", "silu") != "silu":
        raise refuse(source, f"activation {hf['hidden_act']} (SwiGLU needs silu)")
    vocab = hf["vocab_size"]
    if vocab > MAX_VOCAB_SIZE:
        raise FlightMindError(
            f"{source}: a vocabulary of {vocab:,} tokens is not supported: FlightMind's uint16 token shards hold at "
            f"most {MAX_VOCAB_SIZE:,} ids"
        )
    dim, heads = hf["hidden_size"], hf["num_attention_heads"]
    return GPTConfig(
        depth=hf["num_hidden_layers"],
        vocab_size=vocab,
        max_seq_len=hf.get("max_position_embeddings", 2048),
        dim=dim,
        n_layer=hf["num_hidden_layers"],
        head_size=hf.get("head_dim") or dim // heads,
        n_head=heads,
        n_kv_head=hf.get("num_key_value_heads") or heads,
        hidden_dim=hf["intermediate_size"],
        rope_base=float(hf.get("rope_theta") or rope.get("rope_theta") or 10000.0),
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
    )


# ---------------------------------------------------------------------------------------------
# The tokenizer


def _prompt_processor(tokenizer: Tokenizer) -> processors.TemplateProcessing:
    eot = tokenizer.token_to_id(EOT)
    return processors.TemplateProcessing(
        single=f"{EOT} $A", pair=f"{EOT} $A {EOT} $B", special_tokens=[(EOT, eot)]
    )


def with_prompt_processor(tokenizer: Tokenizer) -> Tokenizer:
    """A copy that starts every text encoded with special tokens with ``<|endoftext|>``, as FlightMind's
    prompts start (``encode_prompt``): ``AutoTokenizer(text)`` then gives the ids ``flightmind generate`` feeds.
    A post-processor the tokenizer had runs first. FlightMind itself always encodes with
    ``add_special_tokens=False``, so the processor never reaches training."""
    copy = Tokenizer.from_str(tokenizer.to_str())
    template = _prompt_processor(tokenizer)
    copy.post_processor = template if tokenizer.post_processor is None else processors.Sequence([tokenizer.post_processor, template])
    return copy


def without_prompt_processor(tokenizer: Tokenizer) -> Tokenizer:
    """The tokenizer as it was before ``with_prompt_processor``, so that an exported and re-imported
    tokenizer keeps its hash (training checks it against the data's); any other tokenizer is returned as is."""
    data = json.loads(tokenizer.to_str())
    current = data.get("post_processor") or {}
    template = json.loads(with_prompt_processor(Tokenizer.from_str(json.dumps({**data, "post_processor": None}))).to_str())
    template = template["post_processor"]
    if current == template:
        data["post_processor"] = None
    elif current.get("type") == "Sequence" and current["processors"][-1:] == [template]:
        rest = current["processors"][:-1]
        data["post_processor"] = rest[0] if len(rest) == 1 else {**current, "processors": rest}
    else:
        return tokenizer
    return Tokenizer.from_str(json.dumps(data, ensure_ascii=False))


def with_special_tokens(tokenizer: Tokenizer) -> tuple[Tokenizer, list[str]]:
    """A copy holding FlightMind's special tokens (added at the end of the vocabulary where missing)."""
    copy = Tokenizer.from_str(tokenizer.to_str())
    missing = [t for t in SPECIAL_TOKENS if copy.token_to_id(t) is None or copy.encode(t).ids != [copy.token_to_id(t)]]
    copy.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
    return copy, missing


def chat_template(system_prompt: str) -> str:
    """Jinja for ``apply_chat_template`` (transformers, vLLM, llama.cpp --jinja): each turn
    ``<|role|>content<|end|>``, then ``<|assistant|>`` with ``add_generation_prompt``; ``system_prompt``
    first when the conversation has no system turn, as ``flightmind generate --chat`` does."""
    markers = json.dumps({"system": SYSTEM, "user": USER, "assistant": ASSISTANT})
    system = json.dumps(system_prompt, ensure_ascii=False)
    return (
        f"{{%- set markers = {markers} -%}}"
        f"{{%- if not messages or messages[0]['role'] != 'system' -%}}{{{{- '{SYSTEM}' + {system} + '{END}' -}}}}{{%- endif -%}}"
        "{%- for message in messages -%}"
        "{%- if message['role'] not in markers -%}"
        "{{- raise_exception('FlightMind chats have system, user and assistant turns, not ' + message['role']) -}}"
        "{%- endif -%}"
        f"{{{{- markers[message['role']] + message['content'] + '{END}' -}}}}"
        "{%- endfor -%}"
        f"{{%- if add_generation_prompt -%}}{{{{- '{ASSISTANT}' -}}}}{{%- endif -%}}"
    )


def tokenizer_config(tokenizer: Tokenizer, max_seq_len: int, system_prompt: str) -> dict:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": EOT,
        "eos_token": EOT,
        "pad_token": EOT,
        "additional_special_tokens": [SYSTEM, USER, ASSISTANT, END],
        "model_max_length": max_seq_len,
        "clean_up_tokenization_spaces": False,
        "chat_template": chat_template(system_prompt),
    }


def special_tokens_map() -> dict:
    return {"bos_token": EOT, "eos_token": EOT, "pad_token": EOT, "additional_special_tokens": [SYSTEM, USER, ASSISTANT, END]}


# ---------------------------------------------------------------------------------------------
# Writing


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write a safetensors file atomically, with the mode ``flightmind.atomic`` gives (safetensors
    itself creates files 0600, unreadable to a serving process running as another user)."""
    safetensors = safetensors_torch()

    def write(tmp: Path) -> None:
        mode = tmp.stat().st_mode
        safetensors.save_file(tensors, str(tmp), metadata={"format": "pt"})
        os.chmod(tmp, stat.S_IMODE(mode))

    replace_with(path, write)


def _shards(state: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    return shards


def write_hf(
    state: dict[str, torch.Tensor],
    config: GPTConfig,
    tokenizer: Tokenizer,
    out: str | Path,
    *,
    dtype: str = "float32",
    system_prompt: str,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> list[str]:
    """Write a directory ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained`` load with no custom
    code; returns the file names. ``config.json`` is removed first and written last: a directory holding
    one is complete."""
    safetensors_torch()  # a clear line if it is missing, before anything is removed or written
    if dtype not in TORCH_DTYPES:
        raise FlightMindError(f"dtype {dtype!r} is not one of {', '.join(TORCH_DTYPES)} for the Hugging Face format")
    check_tokenizer(tokenizer, "the model's tokenizer")
    weights = {k: v.detach().to(TORCH_DTYPES[dtype]).contiguous() for k, v in to_hf(state).items()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).unlink(missing_ok=True)
    for stale in [out / INDEX_FILE, out / WEIGHTS_FILE, *out.glob("model-*-of-*.safetensors")]:
        stale.unlink(missing_ok=True)  # an earlier export's weights must not mix with these
    shards = _shards(weights, max_shard_bytes)
    names = [WEIGHTS_FILE] if len(shards) == 1 else [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    for name, shard in zip(names, shards):
        save_safetensors(shard, out / name)
    files = list(names)
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(v.numel() * v.element_size() for v in weights.values())},
            "weight_map": {key: name for name, shard in zip(names, shards) for key in shard},
        }
        write_text(out / INDEX_FILE, json.dumps(index, indent=2) + "\n")
        files.append(INDEX_FILE)
    replace_with(out / "tokenizer.json", lambda tmp: with_prompt_processor(tokenizer).save(str(tmp)))
    write_text(out / "tokenizer_config.json", _json(tokenizer_config(tokenizer, config.max_seq_len, system_prompt)))
    write_text(out / "special_tokens_map.json", _json(special_tokens_map()))
    write_text(out / "generation_config.json", _json(generation_config(tokenizer)))
    write_text(out / CONFIG_FILE, _json(llama_config(config, tokenizer, dtype)))
    return files + [*TOKENIZER_FILES, "generation_config.json", CONFIG_FILE]


def _json(value: dict) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------------------------
# Reading


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    safetensors = safetensors_torch()
    if (directory / INDEX_FILE).is_file():
        index = json.loads((directory / INDEX_FILE).read_text(encoding="utf-8"))
        files = sorted(set(index["weight_map"].values()))
    elif (directory / WEIGHTS_FILE).is_file():
        files = [WEIGHTS_FILE]
    else:
        raise FlightMindError(
            f"{directory} holds no {WEIGHTS_FILE} or {INDEX_FILE}: only safetensors weights are read (re-save the "
            "model with `model.save_pretrained(DIR)`, which writes them)"
        )
    state: dict[str, torch.Tensor] = {}
    for name in files:
        try:
            state.update(safetensors.load_file(str(directory / name), device="cpu"))
        except Exception as e:  # missing or truncated shard (SafetensorError is a bare Exception)
            raise FlightMindError(f"cannot read {directory / name} ({type(e).__name__}: {e})") from None
    return state


def _grow_rows(weight: torch.Tensor, rows: int, spelled: dict[int, list[int]]) -> torch.Tensor:
    """``weight`` with rows appended up to ``rows``. An added token's row is the mean of the rows of the
    tokens its text is made of (``<|user|>`` from ``<``, ``|``, ``user``, …), so that the new markers
    start distinct and near their meaning (LoRA never trains the embedding); padding rows are the mean row."""
    extra = weight.mean(dim=0, keepdim=True).repeat(rows - weight.size(0), 1)
    for token_id, pieces in spelled.items():
        if pieces:
            extra[token_id - weight.size(0)] = weight[pieces].mean(dim=0)
    return torch.cat([weight, extra])


def read_llama(directory: str | Path) -> tuple[SavedModel, dict]:
    """A Llama directory (config.json, safetensors, tokenizer.json) as a FlightMind model, and what was
    changed to get there: {"added_tokens": [...], "rows": (before, after)}.

    FlightMind's special tokens missing from the tokenizer are added at the end of its vocabulary and
    the embedding (and an untied head) grow to cover them, rounded up to a multiple of 128 rows (see
    ``_grow_rows`` for the new rows' values).
    """
    directory = Path(directory)
    try:
        hf = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FlightMindError(f"cannot read {directory / CONFIG_FILE} ({type(e).__name__}: {e})") from None
    try:
        config = gpt_config(hf, directory / CONFIG_FILE)
    except KeyError as e:
        raise FlightMindError(f"{directory / CONFIG_FILE} lacks the key {e.args[0]!r} every Llama config has") from None
    tokenizer_path = directory / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise FlightMindError(
            f"{directory} has no tokenizer.json: save the fast tokenizer with "
            f"`AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR)` first"
        )
    try:
        original = Tokenizer.from_file(str(tokenizer_path))
    except Exception as e:  # the Rust side raises a bare Exception
        raise FlightMindError(f"cannot read tokenizer {tokenizer_path}: {e}") from None
    tokenizer, added = with_special_tokens(without_prompt_processor(original))
    check_tokenizer(tokenizer, tokenizer_path)
    state = from_hf(_read_weights(directory), config, directory)
    rows = config.vocab_size
    if tokenizer.get_vocab_size() > rows:
        rows = min(-(-tokenizer.get_vocab_size() // VOCAB_MULTIPLE) * VOCAB_MULTIPLE, MAX_VOCAB_SIZE)
        old_rows = config.vocab_size
        spelled = {tokenizer.token_to_id(t): [i for i in original.encode(t, add_special_tokens=False).ids if i < old_rows]
                   for t in added if tokenizer.token_to_id(t) >= old_rows}  # fmt: skip
        for key in ("embed.weight", "head.weight"):
            if key in state:
                state[key] = _grow_rows(state[key], rows, spelled)
        config = GPTConfig.from_dict({**config.to_dict(), "vocab_size": rows})
    saved = SavedModel(path=directory, config=config, state_dict=state, lora=None, tokenizer=tokenizer, global_step=None)
    return saved, {"added_tokens": added, "rows": (hf["vocab_size"], rows)}


def read_hf(directory: str | Path) -> SavedModel:
    return read_llama(directory)[0]
