"""Settings checked on the parsed config before anything is built: one line per mistake.

``check_settings`` runs in the CLI's ``before_instantiate_classes``, before data is prepared or
streamed and before a model exists; each refusal names the key, the value and the allowed range.
Keys a config does not have (another data module, another stage) are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from flightmind.errors import FlightMindError

_MISSING = object()


def lookup(config, key: str):
    node = config
    for part in key.split("."):
        try:
            node = node[part] if isinstance(node, dict) else getattr(node, part)
        except (AttributeError, KeyError, TypeError):
            return _MISSING
        if node is None:
            return None
    return node


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# key → (test, allowed range); None values are skipped (unset: the default applies).
RULES: list[tuple[str, Callable[[object], bool], str]] = [
    ("model.init_args.optimizer.max_lr", lambda v: _number(v) and v > 0, "a finite number > 0"),
    ("model.init_args.optimizer.min_lr", lambda v: _number(v) and v >= 0, "a finite number ≥ 0 (unset: max_lr / 10)"),
    ("model.init_args.optimizer.warmup_steps", lambda v: _int(v) and v >= 0, "an integer ≥ 0"),
    ("model.init_args.optimizer.weight_decay", lambda v: _number(v) and v >= 0, "a finite number ≥ 0"),
    ("model.init_args.optimizer.eps", lambda v: _number(v) and v > 0, "a finite number > 0"),
    ("model.init_args.optimizer.betas", lambda v: len(v) == 2 and all(_number(b) and 0 <= b < 1 for b in v), "two numbers in [0, 1)"),
    ("model.init_args.lora_r", lambda v: _int(v) and v >= 1, "an integer ≥ 1"),
    ("model.init_args.lora_alpha", lambda v: _number(v) and v > 0, "a finite number > 0"),
    ("model.init_args.lora_dropout", lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("data.init_args.batch_size", lambda v: _int(v) and v >= 1, "an integer ≥ 1"),
    ("data.init_args.seq_len", lambda v: _int(v) and v >= 2, "an integer ≥ 2"),
    ("data.init_args.num_workers", lambda v: _int(v) and v >= 0, "an integer ≥ 0 (0: load in the main process)"),
    ("data.init_args.aviation_ratio", lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    ("trainer.accumulate_grad_batches", lambda v: _int(v) and v >= 1, "an integer ≥ 1"),
    ("trainer.gradient_clip_val", lambda v: _number(v) and v >= 0, "a finite number ≥ 0"),
    ("trainer.limit_val_batches", lambda v: (_int(v) and v >= 0) or (_number(v) and 0 <= v <= 1), "an integer ≥ 0 (batches) or a fraction in [0, 1]"),
    ("trainer.limit_train_batches", lambda v: (_int(v) and v >= 1) or (_number(v) and 0 < v <= 1), "an integer ≥ 1 (batches) or a fraction in (0, 1]"),
    ("trainer.log_every_n_steps", lambda v: _int(v) and v >= 1, "an integer ≥ 1"),
    ("val_every_n_steps", lambda v: _int(v) and v >= 1, "an integer ≥ 1 (optimizer steps)"),
    ("checkpoint.every_n_train_steps", lambda v: _int(v) and v >= 0, "an integer ≥ 0 (0: no step_N checkpoints)"),
    ("checkpoint.keep", lambda v: _int(v) and v >= 0, "an integer ≥ 0 (0 keeps every step_N checkpoint)"),
    ("signals.check_every_n_steps", lambda v: _int(v) and v >= 1, "an integer ≥ 1"),
]


def refuse(key: str, value, allowed: str) -> FlightMindError:
    return FlightMindError(f"{key}={value!r} is out of range: it must be {allowed}")


def check_settings(config, subcommand: str | None = "fit") -> None:
    """Raise one FlightMindError for the first setting out of range in the parsed config."""
    for key, test, allowed in RULES:
        value = lookup(config, key)
        if value is _MISSING or value is None:
            continue
        try:
            ok = bool(test(value))
        except TypeError:
            ok = False
        if not ok:
            raise refuse(key, value, allowed)
    opt = "model.init_args.optimizer"
    max_lr, min_lr = lookup(config, f"{opt}.max_lr"), lookup(config, f"{opt}.min_lr")
    if _number(max_lr) and _number(min_lr) and min_lr > max_lr:
        raise refuse(f"{opt}.min_lr", min_lr, f"at most {opt}.max_lr={max_lr!r} (the cosine falls from max_lr to min_lr)")
    if subcommand != "fit":
        return
    max_steps = lookup(config, "trainer.max_steps")
    if not (_int(max_steps) and max_steps >= 1):
        raise refuse("trainer.max_steps", max_steps, "an integer ≥ 1 (the learning-rate schedule is built from it)")
    warmup = lookup(config, f"{opt}.warmup_steps")
    if _int(warmup) and warmup >= max_steps:
        raise refuse(f"{opt}.warmup_steps", warmup, f"below trainer.max_steps={max_steps} (warm-up must end before training does)")
