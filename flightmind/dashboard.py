"""`flightmind dashboard lightning_logs/version_N [--out dashboard.png]`: the spec's training figure.

Four panels read from the run's TensorBoard event files: (a) train and validation loss,
(b) perplexity, (c) gradient norm (before clipping), (d) tokens per second; the title names the
run, the model size (from the run's hparams.yaml) and the optimizer steps. Plotting needs the
optional extra ``plot`` (matplotlib).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lightning.pytorch.core.saving import load_hparams_from_yaml

from flightmind.atomic import replace_with
from flightmind.errors import FlightMindError
from flightmind.model.config import GPTConfig

Series = list[tuple[int, float]]

# (panel title, y label, [(tag, legend label)], log scale)
PANELS = (
    ("(a) loss", "cross-entropy (nats)", [("train/loss", "train"), ("val/loss", "validation")], False),
    ("(b) perplexity", "perplexity", [("train/ppl", "train"), ("val/ppl", "validation")], True),
    ("(c) gradient norm", "L2 norm before clipping", [("train/grad_norm", "train")], False),
    ("(d) throughput", "tokens / s", [("train/items_per_sec", "all devices"), ("train/device/items_per_sec", "per device")], False),
)


def read_scalars(run_dir: str | Path) -> dict[str, Series]:
    """Every scalar series of a run: tag → [(step, value)], all points kept."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not any(run_dir.glob("events.out.tfevents.*")):
        raise FlightMindError(
            f"{run_dir} holds no TensorBoard event files: pass a run directory such as lightning_logs/version_0"
        )
    events = EventAccumulator(str(run_dir), size_guidance={SCALARS: 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def title(run_dir: Path, scalars: dict[str, Series], name: str | None) -> str:
    """'FlightMind-d8 (50.3M parameters) · lightning_logs/version_3 · 5,000 steps'."""
    steps = max(step for step, _ in scalars["train/loss"]) + 1
    parts = [name or f"{run_dir.parent.name}/{run_dir.name}", f"{steps:,} steps"]
    hparams = run_dir / "hparams.yaml"
    if hparams.is_file():
        values = load_hparams_from_yaml(str(hparams)) or {}
        shape = values.get("shape") or (values if "depth" in values else None)  # earlier runs: top-level depth
        if shape:
            config = GPTConfig.from_dict(shape)
            parts.insert(0, f"FlightMind-d{config.depth} ({config.num_params() / 1e6:.1f}M parameters)")
    return " · ".join(parts)


def draw(run_dir: str | Path, out: str | Path, name: str | None = None) -> Path:
    """Write the four-panel figure of a run to ``out`` (atomically) and return its path."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise FlightMindError("the dashboard needs matplotlib: pip install 'flightmind[plot]'") from None
    run_dir, out = Path(run_dir), Path(out)
    scalars = read_scalars(run_dir)
    if not scalars.get("train/loss"):
        raise FlightMindError(f"{run_dir} has no train/loss: is it a run of `flightmind fit`?")
    figure = Figure(figsize=(12, 8), layout="constrained")
    figure.suptitle(title(run_dir, scalars, name))
    for axes, (panel, ylabel, series, log) in zip(figure.subplots(2, 2).flat, PANELS):
        drawn = False
        for tag, label in series:
            points = scalars.get(tag)
            if not points:
                continue
            steps, values = zip(*points)
            validation = tag.startswith("val/")
            axes.plot(steps, values, "o-" if validation else "-", label=label, markersize=4, linewidth=1.5 if validation else 1)
            drawn = True
            if tag == "train/items_per_sec":
                break  # the all-devices series is the run's throughput; per device is a fallback
        axes.set_title(panel, loc="left")
        axes.set_xlabel("optimizer step")
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.set_ylabel(ylabel)
        axes.grid(alpha=0.3)
        if not drawn:
            axes.text(0.5, 0.5, "not logged", transform=axes.transAxes, ha="center", va="center", color="gray")
            continue
        if log:
            axes.set_yscale("log")
        axes.legend()
    replace_with(out, lambda tmp: figure.savefig(tmp, format=out.suffix.lstrip(".") or "png", dpi=100))
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run's log directory, e.g. lightning_logs/version_0")
    parser.add_argument("--out", metavar="FILE.png", help="where to write the figure (default: RUN_DIR/dashboard.png)")
    parser.add_argument("--name", help="the run's name in the title (default: the directory)")


def run(args: argparse.Namespace) -> int:
    out = draw(args.run_dir, args.out or Path(args.run_dir) / "dashboard.png", args.name)
    print(out)
    return 0
