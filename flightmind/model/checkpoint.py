"""Loading a trained model for inference: the GPT (eval mode) and its tokenizer, from what training wrote.

Every kind of saved model is recognized here, in ``load_trained``, and nowhere else:

- a Lightning checkpoint from ``flightmind fit`` (``*.ckpt``): the model's shape under ``model_config``,
  the weights under ``state_dict`` with a ``model.`` prefix, and the run's tokenizer under
  ``tokenizer`` (``PretrainModule`` copies it in, so a checkpoint is enough to sample from).

A new kind (e.g. a directory of merged fine-tuned weights) gets its branch in ``load_trained``;
``flightmind generate`` and everything else that samples go through it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch
from tokenizers import Tokenizer

from flightmind.data.tokenizer import load_tokenizer
from flightmind.errors import FlightMindError
from flightmind.model.config import GPTConfig
from flightmind.model.gpt import GPT

MODEL_PREFIX = "model."


def checkpoint_tokenizer(checkpoint: dict) -> Tokenizer | None:
    """The tokenizer a checkpoint carries (see ``PretrainModule.on_save_checkpoint``), if any."""
    saved = checkpoint.get("tokenizer")
    return None if saved is None else Tokenizer.from_str(saved["json"])


def _read_lightning_checkpoint(path: Path) -> dict:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, zipfile.BadZipFile) as err:
        raise FlightMindError(f"cannot read checkpoint {path}: {err}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "model_config" not in checkpoint:
        raise FlightMindError(
            f"{path} is not a FlightMind checkpoint (no state_dict and model_config): "
            "pass a .ckpt written by `flightmind fit`"
        )
    return checkpoint


def _model_from_checkpoint(checkpoint: dict, path: Path) -> GPT:
    model = GPT(GPTConfig.from_dict(checkpoint["model_config"]))
    weights = {k[len(MODEL_PREFIX) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(MODEL_PREFIX)}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise FlightMindError(
            f"checkpoint {path} does not match its own model_config: missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}; it was not written by this version of `flightmind fit`"
        )
    return model


def load_trained(
    path: str | Path, *, tokenizer: str | Path | None = None, device: str | torch.device = "cpu"
) -> tuple[GPT, Tokenizer]:
    """The model (eval mode, on ``device``) and tokenizer saved at ``path``.

    ``tokenizer`` (a tokenizer.json) replaces the one the checkpoint carries.
    """
    path = Path(path)
    if not path.exists():
        raise FlightMindError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise FlightMindError(f"{path} is a directory: pass a checkpoint file (e.g. checkpoints/d8/best.ckpt)")
    checkpoint = _read_lightning_checkpoint(path)
    model = _model_from_checkpoint(checkpoint, path)
    if tokenizer is not None:
        tok = load_tokenizer(tokenizer)
    else:
        tok = checkpoint_tokenizer(checkpoint)
        if tok is None:
            raise FlightMindError(
                f"checkpoint {path} carries no tokenizer: pass the run's with --tokenizer DATA_DIR/tokenizer.json"
            )
    if tok.get_vocab_size() > model.config.vocab_size:
        raise FlightMindError(
            f"the tokenizer has {tok.get_vocab_size()} tokens but the model in {path} only "
            f"{model.config.vocab_size}: pass the tokenizer the model was trained with"
        )
    return model.to(device).eval(), tok
