"""Loading a trained model: the GPT and its tokenizer, from what training or export wrote.

Every kind of saved model is read here and nowhere else:

- a Lightning checkpoint from ``flightmind fit`` (``*.ckpt``): the model's shape under
  ``model_config``, the weights under ``state_dict`` with a ``model.`` prefix, and the run's tokenizer
  under ``tokenizer`` (``{"json", "sha256"}``, see ``tokenizer_entry``; ``PretrainModule`` and so
  ``FinetuneModule`` copy it in). A LoRA fine-tune adds ``lora`` (r, alpha, targets), and its
  adapters' tensors are among the weights;
- a torch distributed checkpoint directory from ``flightmind fit`` under FSDP2 (its format and safe
  reading: ``distributed_checkpoint.py``); its weights are gathered into one state dict on the CPU,
  in one process;
- a directory from ``flightmind export --format flightmind``: ``model.safetensors`` (the plain GPT's
  keys), ``config.json`` (``{"format": "flightmind-gpt", "model_config": …}``) and ``tokenizer.json``;
- a Hugging Face Llama directory (``flightmind export``'s default format, or a downloaded model), read
  by ``flightmind.interop.hf.read_hf``.

``read_saved`` gives either as a ``SavedModel``, ``build_model`` the GPT it holds (adapters merged)
and ``load_trained`` both with the tokenizer: ``flightmind generate``, ``flightmind export`` and the
fine-tuning module's base all read through these. A new kind gets its branch in ``read_saved``.
"""

from __future__ import annotations

import json
import warnings
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer
from torch import nn

from flightmind.contracts import load_tokenizer, tokenizer_hash
from flightmind.errors import FlightMindError
from flightmind.model.config import GPTConfig
from flightmind.model.distributed_checkpoint import DCP_METADATA, check_index, is_distributed_checkpoint
from flightmind.model.gpt import GPT
from flightmind.model.lora import apply_lora, merge_lora_weights

MODEL_PREFIX = "model."
EXPORT_FORMAT = "flightmind-gpt"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"


def safetensors_torch():
    """``safetensors.torch``, an optional dependency (exported models are safetensors files)."""
    try:
        import safetensors.torch
    except ImportError:
        raise FlightMindError(
            "exported models are safetensors files, and the safetensors package is not installed: "
            "pip install 'flightmind[export]'"
        ) from None
    return safetensors.torch


# ---------------------------------------------------------------------------------------------
# The tokenizer a checkpoint carries


def tokenizer_entry(tokenizer_json: str) -> dict:
    """What a checkpoint stores under ``tokenizer``: the tokenizer.json text and its hash."""
    return {"json": tokenizer_json, "sha256": tokenizer_hash(Tokenizer.from_str(tokenizer_json))}


def checkpoint_tokenizer(checkpoint: dict) -> Tokenizer | None:
    """The tokenizer a checkpoint carries (see ``tokenizer_entry``), if any."""
    saved = checkpoint.get("tokenizer")
    return None if saved is None else Tokenizer.from_str(saved["json"])


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass
class SavedModel:
    """A trained model as read from disk, before a GPT is built from it."""

    path: Path
    config: GPTConfig
    state_dict: dict[str, torch.Tensor]  # the GPT's own keys; LoRA tensors too when ``lora`` is set
    lora: dict | None  # {"r", "alpha", "targets"} of an unmerged LoRA fine-tune
    tokenizer: Tokenizer | None
    global_step: int | None


def _load_distributed(path: Path, weights: bool) -> dict:
    """A DCP directory as the dict a .ckpt file holds (its ``state_dict`` only when ``weights``)."""
    check_index(path)
    try:
        checkpoint = torch.load(path / DCP_METADATA, map_location="cpu", weights_only=True)
        if "model_config" not in checkpoint:
            raise FlightMindError(f"{path} is not a FlightMind checkpoint (no model_config in {DCP_METADATA})")
        if weights:
            # The model the metadata describes, as the template DCP loads the shards into (all of them,
            # whatever number of ranks wrote them).
            model = GPT(GPTConfig.from_dict(checkpoint["model_config"]))
            if checkpoint.get("lora"):
                lora = checkpoint["lora"]
                apply_lora(model, r=int(lora["r"]), alpha=float(lora["alpha"]), targets=lora["targets"])
            state = {"state_dict": {MODEL_PREFIX + k: v for k, v in model.state_dict().items()}}
            import torch.distributed.checkpoint as dcp

            with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
                warnings.simplefilter("ignore", UserWarning)
                dcp.load(state, checkpoint_id=str(path), no_dist=True)
            checkpoint["state_dict"] = state["state_dict"]
    except FlightMindError:
        raise
    except Exception as e:  # a missing shard, a truncated file, another model's shards
        raise FlightMindError(f"cannot read distributed checkpoint {path} ({type(e).__name__}: {str(e)[:200]})") from None
    return checkpoint


ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive


def unreadable_reason(path: Path, error: BaseException) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in a few words a user can act on."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as file:
            head = file.read(4)
    except OSError as e:
        return e.strerror or str(e)
    if size == 0:
        return "the file is empty (0 bytes; an interrupted copy or write?)"
    if head != ZIP_MAGIC:
        return f"not a checkpoint: {size:,} bytes that torch.save did not write (no zip archive)"
    if not zipfile.is_zipfile(path):
        return f"the file is truncated or damaged ({size:,} bytes, the zip archive has no end; an interrupted copy?)"
    if isinstance(error, pickle.UnpicklingError):
        # torch's message starts with a paragraph on weights_only; the line naming the object is the reason.
        lines = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line or "Unsupported" in line]
        what = lines[0] if lines else str(error).splitlines()[0]
        return (
            f"it holds Python objects other than tensors and plain values, which can run code when loaded, and "
            f"FlightMind loads checkpoints with weights_only=True only ({what})"
        )
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:160]}"


def load_checkpoint_file(path: str | Path, *, mmap: bool = True, map_location=None) -> dict:
    """``torch.load`` with ``weights_only=True`` whatever the environment says (an explicit argument
    wins over ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``); a failure is one FlightMindError naming the file.
    A distributed (FSDP2) checkpoint directory: its ``meta.pt``, the part that is not tensors."""
    path = Path(path)
    if is_distributed_checkpoint(path):
        check_index(path)
        return load_checkpoint_file(path / DCP_METADATA, mmap=mmap, map_location=map_location)
    if path.is_dir():
        raise FlightMindError(f"checkpoint {path} is a directory: name a .ckpt written by `flightmind fit`")
    if not path.is_file():
        raise FlightMindError(f"checkpoint {path} does not exist: name a .ckpt written by `flightmind fit`")
    try:
        checkpoint = torch.load(path, map_location=map_location or "cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # a truncated zip, a pickle with foreign objects, not a checkpoint at all
        raise FlightMindError(f"cannot read checkpoint {path}: {unreadable_reason(path, e)}") from None
    if not isinstance(checkpoint, dict):
        raise FlightMindError(f"{path} is not a FlightMind checkpoint: it holds a {type(checkpoint).__name__}, not what `flightmind fit` writes")
    return checkpoint


def _load_lightning(path: Path, weights: bool = True) -> dict:
    if is_distributed_checkpoint(path):
        checkpoint = _load_distributed(path, weights)
    else:  # mmap: reading a d24 checkpoint costs no memory until its tensors are used
        checkpoint = load_checkpoint_file(path, mmap=True)
    if "model_config" not in checkpoint or (weights and "state_dict" not in checkpoint):
        raise FlightMindError(
            f"{path} is not a FlightMind checkpoint (no 'state_dict' and 'model_config'): "
            "name a .ckpt written by `flightmind fit`"
        )
    if not isinstance(checkpoint["model_config"], dict):
        raise FlightMindError(f"{path}: its model_config is not a mapping; the file was not written by `flightmind fit`")
    return checkpoint


def saved_config(values: dict, source: str | Path) -> GPTConfig:
    """``GPTConfig.from_dict``, a malformed shape reported as one line naming ``source``."""
    try:
        return GPTConfig.from_dict(values)
    except Exception as e:  # a wrong type or value in a field: the dataclass says which
        raise FlightMindError(f"{source}: its model_config is malformed ({type(e).__name__}: {e})") from None


def saved_tokenizer(checkpoint: dict, source: str | Path) -> Tokenizer | None:
    """``checkpoint_tokenizer``, a malformed tokenizer reported as one line naming ``source``."""
    try:
        return checkpoint_tokenizer(checkpoint)
    except Exception as e:  # tokenizers raises a bare Exception for malformed JSON
        raise FlightMindError(
            f"{source}: the tokenizer it carries cannot be read ({type(e).__name__}: {str(e)[:120]}); "
            "pass --tokenizer with the tokenizer.json the model was trained with"
        ) from None


def read_model_config(path: str | Path) -> GPTConfig:
    """The model shape a Lightning checkpoint was trained with."""
    return saved_config(_load_lightning(Path(path), weights=False)["model_config"], path)


def read_checkpoint(path: str | Path) -> SavedModel:
    """A Lightning checkpoint written by ``flightmind fit`` (pretraining or LoRA fine-tuning)."""
    path = Path(path)
    checkpoint = _load_lightning(path)
    n = len(MODEL_PREFIX)
    state = {k[n:]: v for k, v in checkpoint["state_dict"].items() if k.startswith(MODEL_PREFIX)}
    if not state:
        raise FlightMindError(f"checkpoint {path} holds no model weights (no '{MODEL_PREFIX}' keys in its state_dict)")
    return SavedModel(
        path=path,
        config=saved_config(checkpoint["model_config"], path),
        state_dict=state,
        lora=checkpoint.get("lora"),
        tokenizer=saved_tokenizer(checkpoint, path),
        global_step=checkpoint.get("global_step"),
    )


def is_hf_directory(directory: Path) -> bool:
    """A directory whose config.json describes a transformers model (it names a ``model_type``)."""
    try:
        config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "model_type" in config


def read_export(directory: str | Path) -> SavedModel:
    """A directory written by ``flightmind export``."""
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise FlightMindError(
            f"{directory} holds no {CONFIG_FILE}: it is not a complete `flightmind export` directory "
            "(pass such a directory or a .ckpt written by `flightmind fit`)"
        )
    if is_hf_directory(directory):
        from flightmind.interop.hf import read_hf

        return read_hf(directory)
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        model_config = GPTConfig.from_dict(config["model_config"])
    except (ValueError, KeyError, TypeError) as e:
        raise FlightMindError(f"cannot read {config_path} ({type(e).__name__}: {e}); export the model again") from None
    if config.get("format") != EXPORT_FORMAT:
        raise FlightMindError(f"{config_path} describes format {config.get('format')!r}, not {EXPORT_FORMAT!r}")
    weights_path = directory / WEIGHTS_FILE
    safetensors = safetensors_torch()
    try:
        state = safetensors.load_file(str(weights_path), device="cpu")
    except Exception as e:  # missing, truncated, not a safetensors file (SafetensorError is a bare Exception)
        raise FlightMindError(f"cannot read {weights_path} ({type(e).__name__}: {e}); export the model again") from None
    return SavedModel(
        path=directory,
        config=model_config,
        state_dict=state,
        lora=None,  # merged at export
        tokenizer=load_tokenizer(directory / TOKENIZER_FILE),
        global_step=(config.get("source") or {}).get("global_step"),
    )


def read_saved(path: str | Path) -> SavedModel:
    """A Lightning checkpoint file or an export directory, whichever ``path`` is."""
    path = Path(path)
    if not path.exists():
        raise FlightMindError(
            f"checkpoint {path} does not exist: pass a .ckpt written by `flightmind fit` or a directory "
            "written by `flightmind export`"
        )
    return read_export(path) if path.is_dir() and not is_distributed_checkpoint(path) else read_checkpoint(path)


# ---------------------------------------------------------------------------------------------
# Building


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load a state dict strictly, reporting every missing, unexpected or misshapen key at once."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshapen = [
        f"{k} {tuple(state_dict[k].shape)} where the model has {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if missing or unexpected or misshapen:
        problems = [f"{len(missing)} missing ({', '.join(missing[:3])})"] if missing else []
        problems += [f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])})"] if unexpected else []
        problems += [f"{len(misshapen)} of another shape ({'; '.join(misshapen[:3])})"] if misshapen else []
        raise FlightMindError(
            f"the weights in {source} do not fit the model its configuration describes: {', '.join(problems)}; "
            "the file does not match its model_config (was it written by another version or edited?)"
        )
    model.load_state_dict(state_dict)


def build_model(saved: SavedModel, *, merge: bool = True) -> GPT:
    """The saved GPT with its weights (float32, train mode); a LoRA fine-tune comes merged unless ``merge=False``."""
    model = GPT(saved.config)
    if saved.lora:
        lora = saved.lora
        apply_lora(model, r=int(lora["r"]), alpha=float(lora["alpha"]), targets=lora["targets"])
    load_weights(model, saved.state_dict, saved.path)
    if saved.lora and merge:
        merge_lora_weights(model)
    return model


def trained_tokenizer(saved: SavedModel, override: str | Path | None = None) -> Tokenizer:
    """The tokenizer to use with ``saved``: ``override`` (a tokenizer.json) or the one it carries."""
    if override is not None:
        tokenizer = load_tokenizer(override)
    elif saved.tokenizer is not None:
        tokenizer = saved.tokenizer
    else:
        raise FlightMindError(
            f"checkpoint {saved.path} does not hold its tokenizer: pass --tokenizer with the tokenizer.json it "
            "was trained with (e.g. data/tokenized/tokenizer.json)"
        )
    if tokenizer.get_vocab_size() > saved.config.vocab_size:
        raise FlightMindError(
            f"the tokenizer has {tokenizer.get_vocab_size():,} tokens but the model in {saved.path} only "
            f"{saved.config.vocab_size:,} embedding rows: pass the tokenizer the model was trained with"
        )
    return tokenizer


def load_trained(
    path: str | Path, *, tokenizer: str | Path | None = None, device: str | torch.device = "cpu"
) -> tuple[GPT, Tokenizer]:
    """The model (adapters merged, eval mode, on ``device``) and tokenizer saved at ``path``: a
    pretraining or LoRA fine-tuning ``.ckpt``, or an export directory.

    ``tokenizer`` (a tokenizer.json) replaces the one saved with the model.
    """
    saved = read_saved(path)
    tok = trained_tokenizer(saved, tokenizer)
    return build_model(saved).to(device).eval(), tok
