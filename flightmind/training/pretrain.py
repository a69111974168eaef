"""Pretraining: next-token cross-entropy on packed windows of a randomly initialized GPT.

What the stage adds to the causal-LM core (causal_lm.py): the model's shape from the config, and
``flightmind test`` on held-out documents (bits per byte; see flightmind.data.heldout).
"""

from __future__ import annotations

from dataclasses import fields, replace

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torchmetrics import SumMetric

from flightmind.contracts import IGNORE_INDEX
from flightmind.data.heldout import bits_per_byte
from flightmind.errors import FlightMindError
from flightmind.model import GPT, GPTConfig
from flightmind.model.checkpoint import build_model, read_checkpoint, read_model_config, tokenizer_entry
from flightmind.training.causal_lm import CausalLM
from flightmind.training.guards import GuardSettings
from flightmind.training.optimizer import OptimizerSettings
from flightmind.training.parallel import ActivationCheckpointing


def shape_to_continue(init_from: str, configured: GPTConfig | None) -> GPTConfig:
    """The shape of the checkpoint ``init_from`` names, with the configured runtime settings
    (``GPTConfig.RUNTIME_FIELDS``); configured shape fields it overrides are named in a warning."""
    saved = read_model_config(init_from)
    if configured is None:
        return saved
    ignored = [
        f"{f.name}={getattr(configured, f.name)!r} (the checkpoint's: {getattr(saved, f.name)!r})"
        for f in fields(GPTConfig)
        if f.name not in GPTConfig.RUNTIME_FIELDS and getattr(configured, f.name) not in (None, getattr(saved, f.name))
    ]
    if ignored:
        rank_zero_warn(
            f"model.init_args.init_from {init_from}: training continues with the checkpoint's shape; "
            f"model.init_args.shape's {', '.join(ignored)} {'is' if len(ignored) == 1 else 'are'} ignored"
        )
    return replace(saved, **{name: getattr(configured, name) for name in GPTConfig.RUNTIME_FIELDS})


class PretrainModule(CausalLM):
    def __init__(
        self,
        shape: GPTConfig | None = None,
        optimizer: OptimizerSettings = OptimizerSettings(),
        guard: GuardSettings = GuardSettings(),
        compile: bool = False,
        activation_checkpointing: ActivationCheckpointing | bool = False,
        init_from: str | None = None,
    ) -> None:
        """
        Args:
            shape: the model's shape (``depth`` alone gives the spec's table; see GPTConfig); unset: d8.
            optimizer: AdamW and the warm-up → cosine schedule.
            guard: what to do about non-finite steps and loss spikes.
            compile: compile every block in place with ``torch.compile`` (checkpoint keys unchanged), and the loss.
            activation_checkpointing: recompute activations in backward: ``{mode: full, every: k}`` (every
                k-th block), ``{mode: selective}`` (torchtitan's op policy) or none; ``true`` is full.
            init_from: a checkpoint (``flightmind fit`` or ``flightmind import-hf``) whose shape, weights and
                tokenizer start this run (continued pretraining; ``shape`` is then ignored). The optimizer, the
                schedule and the step count start afresh: to resume a run, use ``--ckpt_path`` instead.
        """
        super().__init__(optimizer, guard, compile, activation_checkpointing)
        self.init_from = init_from
        if init_from is not None:  # the checkpoint's shape, not the config's
            shape = shape_to_continue(init_from, shape)
        shape = shape or GPTConfig()
        # Plain values only: checkpoints are read with weights_only=True.
        self.save_hyperparameters({"shape": shape.to_dict(), "optimizer": vars(optimizer), "guard": vars(guard),
                                   "compile": compile, "activation_checkpointing": vars(ActivationCheckpointing.of(activation_checkpointing)),
                                   "init_from": init_from})
        self.config = shape
        # Held-out totals, summed in float64 across batches and ranks (see flightmind.data.heldout).
        self.test_sums = torch.nn.ModuleDict(
            {name: SumMetric().set_dtype(torch.float64) for name in ("nats", "tokens", "bytes", "documents")}
        )

    def build_model(self) -> GPT:
        if self.init_from is not None:
            return build_model(read_checkpoint(self.init_from))  # adapters of a fine-tune come merged
        return GPT(self.config)

    def expected_tokenizer(self) -> tuple[dict | None, str]:
        if self.init_from is None:
            return None, ""
        tokenizer = read_checkpoint(self.init_from).tokenizer
        return (None if tokenizer is None else tokenizer_entry(tokenizer.to_str())), f"model.init_args.init_from {self.init_from}"

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # durable (issue 11): a LoRA fine-tune's state has adapter weights pretraining cannot load.
        if checkpoint.get("lora") is not None:
            raise FlightMindError(
                f"checkpoint {self._trainer.ckpt_path if self._trainer else ''} is a LoRA fine-tune: resume it with a "
                "fine-tuning config (model.class_path flightmind.training.finetune.FinetuneModule), or pass a "
                "pretraining checkpoint to --ckpt_path"
            )
        super().on_load_checkpoint(checkpoint)

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy over a batch of windows (B, T+1)."""
        inputs, targets = batch[:, :-1], batch[:, 1:]
        return self._cross_entropy(self.model(inputs), targets)

    def loss_weight(self, batch: torch.Tensor) -> int:
        return batch.size(0)  # every window has the same number of targets

    def batch_shape(self, batch: torch.Tensor) -> tuple[int, int]:
        return batch.size(0), batch.size(1) - 1

    # -- test: held-out documents, every token once (flightmind.data.heldout) --------------------------
    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self.model(batch["input_ids"])
        targets = batch["targets"].flatten()
        nats = F.cross_entropy(logits.flatten(0, 1).float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")
        sums = self.test_sums
        sums["nats"].update(nats)
        sums["tokens"].update((targets != IGNORE_INDEX).sum())
        sums["bytes"].update(batch["bytes"].sum())
        sums["documents"].update(batch["documents"].sum())

    def on_test_epoch_end(self) -> None:
        totals = {name: metric.compute() for name, metric in self.test_sums.items()}  # summed over ranks
        for metric in self.test_sums.values():
            metric.reset()
        loss = totals["nats"] / totals["tokens"]
        bpb = bits_per_byte(totals["nats"], totals["bytes"])
        self.log_dict(
            {
                "test/loss": loss,
                "test/ppl": torch.exp(loss),
                "test/bits_per_byte": bpb,
                "test/tokens": totals["tokens"],
                "test/documents": totals["documents"],
            }
        )
        rank_zero_info(
            f"held-out set: {int(totals['documents']):,} documents, {int(totals['tokens']):,} tokens, "
            f"{int(totals['bytes']):,} bytes: loss {float(loss):.4f}, perplexity {float(torch.exp(loss)):.2f}, "
            f"{float(bpb):.4f} bits per byte"
        )
