"""Pretraining: next-token cross-entropy on packed sequences, AdamW, warm-up → cosine.

Lightning owns the loop, precision, accumulation, clipping, distribution and checkpoints; this
module owns the model, the loss, the optimizer groups and what gets logged.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torchmetrics import MeanMetric, SumMetric

from flightmind.contracts import IGNORE_INDEX, load_tokenizer, tokenizer_hash
from flightmind.data.heldout import bits_per_byte
from flightmind.errors import FlightMindError
from flightmind.model import GPT, Block, GPTConfig
from flightmind.model.checkpoint import tokenizer_entry
from flightmind.training.callbacks import is_logging_step
from flightmind.training.guards import TrainingGuard
from flightmind.training.schedule import warmup_cosine


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of logits (B, T, V) against targets (B, T), in fp32."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


class PretrainModule(L.LightningModule):
    def __init__(
        self,
        depth: int = 8,
        vocab_size: int = 32768,
        max_seq_len: int = 2048,
        max_lr: float = 6e-4,
        min_lr: float | None = None,
        warmup_steps: int = 500,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        compile: bool = False,
        activation_checkpointing: bool = False,
        skip_nonfinite: int = 0,
        spike_factor: float = 2.0,
        spike_window: int = 100,
    ) -> None:
        """
        Args:
            depth: the one size knob: width 64·depth, depth layers, heads of 128.
            vocab_size: rows of the (tied) embedding; at least the tokenizer's vocabulary.
            max_seq_len: longest sequence the rotary tables cover.
            max_lr: peak learning rate, reached after ``warmup_steps`` optimizer steps.
            min_lr: floor of the cosine at ``trainer.max_steps``; ``max_lr / 10`` when unset.
            warmup_steps: optimizer steps of linear warm-up from 0.
            weight_decay: AdamW decay for tensors with ≥ 2 dims; 1-dim tensors get none.
            betas: AdamW betas.
            eps: AdamW epsilon.
            compile: compile the model in place with ``torch.compile`` (keys stay unchanged), and the loss.
            activation_checkpointing: recompute each block's activations during backward instead of
                storing them (less memory, about a third more compute); works under every strategy.
            skip_nonfinite: optimizer steps with a non-finite loss or gradient norm to skip and count;
                the next one stops training (0: the first one does), saving the last good state.
            spike_factor: warn when a step's loss exceeds this multiple of the running median.
            spike_window: optimizer steps in that running median.
        """
        super().__init__()
        self.save_hyperparameters()
        self.config = GPTConfig(depth=depth, vocab_size=vocab_size, max_seq_len=max_seq_len)
        self.model: GPT | None = None
        self._cross_entropy = cross_entropy
        self._matrices: set[int] = set()  # ids of the ≥ 2-dim parameters, recorded while they are whole
        self.val_loss = MeanMetric()
        # Held-out totals, summed in float64 across batches and ranks (see flightmind.data.heldout).
        self.test_sums = torch.nn.ModuleDict(
            {name: SumMetric().set_dtype(torch.float64) for name in ("nats", "tokens", "bytes", "documents")}
        )
        self._loss_sum: torch.Tensor | None = None
        self._loss_count = 0
        self.last_step_loss: torch.Tensor | None = None
        self._grad_norm: torch.Tensor | None = None  # measured before clipping, every optimizer step
        self.flops_per_batch: int | None = None  # read by ThroughputMonitor for FLOP/s and MFU
        self.guard = TrainingGuard(skip_nonfinite, spike_factor, spike_window)
        self.tokenizer: dict | None = None  # the run's tokenizer {"json", "sha256"}, copied into every checkpoint

    # -- model ---------------------------------------------------------------------------------
    def configure_model(self) -> None:
        """Build (and optionally compile) the GPT once, on the device the strategy chose."""
        if self.model is not None:
            return
        self.model = GPT(self.config)
        # FSDP later turns every parameter into a 1-dim view of its shard (the same Parameter objects):
        # decide weight decay by the shape each has now.
        self._matrices = {id(p) for p in self.model.parameters() if p.dim() >= 2}
        if self.hparams.activation_checkpointing:
            from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing

            apply_activation_checkpointing(self.model, check_fn=lambda module: isinstance(module, Block))
        if self.hparams.compile:
            self.model.compile()
            # Compiled, the loss never materializes fp32 copies of the logits: 2 bytes per logit, not 12
            # (benchmarks/loss_memory.py).
            self._cross_entropy = torch.compile(cross_entropy)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy over a batch of windows (B, T+1)."""
        inputs, targets = batch[:, :-1], batch[:, 1:]
        return self._cross_entropy(self.model(inputs), targets)

    # -- training ------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        datamodule = self.trainer.datamodule
        data_vocab = getattr(datamodule, "vocab_size", None)
        if data_vocab is not None and data_vocab > self.config.vocab_size:
            raise FlightMindError(
                f"the tokenizer has {data_vocab} tokens but model.vocab_size is {self.config.vocab_size}: "
                f"set model.vocab_size to at least {data_vocab}"
            )
        seq_len = getattr(datamodule, "seq_len", None)
        if seq_len is not None and seq_len > self.config.max_seq_len:
            raise FlightMindError(
                f"data.seq_len={seq_len} exceeds model.max_seq_len={self.config.max_seq_len}: lower one or raise the other"
            )
        tokenizer_path = getattr(datamodule, "tokenizer_path", None)
        if tokenizer_path is not None and Path(tokenizer_path).is_file():
            self.tokenizer = tokenizer_entry(Path(tokenizer_path).read_text(encoding="utf-8"))

    def on_train_start(self) -> None:
        trainer, datamodule = self.trainer, self.trainer.datamodule
        if hasattr(datamodule, "batch_size") and hasattr(datamodule, "seq_len"):
            tokens = datamodule.batch_size * trainer.accumulate_grad_batches * trainer.world_size * datamodule.seq_len
            rank_zero_info(
                f"FlightMind d{self.config.depth}: {self.config.num_params() / 1e6:.1f}M parameters; "
                f"{tokens:,} tokens per optimizer step = micro-batch {datamodule.batch_size} × accumulation "
                f"{trainer.accumulate_grad_batches} × {trainer.num_devices} devices × {trainer.num_nodes} nodes "
                f"× sequence {datamodule.seq_len}"
            )

    def on_train_batch_start(self, batch: torch.Tensor, batch_idx: int) -> None:
        B, T = batch.size(0), batch.size(1) - 1
        self.flops_per_batch = self.config.flops_per_token(T) * B * T

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        detached = loss.detach()
        self._loss_sum = detached if self._loss_sum is None else self._loss_sum + detached
        self._loss_count += 1
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Called once per optimizer step, after accumulation: log the loss of the whole effective batch.
        trainer, step = self.trainer, self.trainer.global_step
        step_loss = self._loss_sum / self._loss_count
        self._loss_sum, self._loss_count = None, 0
        self.last_step_loss = step_loss
        # Not prog_bar: Lightning reads progress-bar values back after every batch, a GPU sync;
        # StepProgressBar shows train/loss on logging steps only.
        self.log("train/loss", step_loss)
        self.log("train/ppl", torch.exp(step_loss))
        # On device, every step: the guard needs finiteness (under FSDP each rank sees its shard; the
        # guard sums the verdict over ranks). The logged norm under FSDP comes from the clipping below.
        norm = torch.nn.utils.get_total_norm([p.grad for p in self.parameters() if p.grad is not None])
        self._grad_norm = norm  # clipping reuses it
        sum_over_ranks = _sum_over_ranks if trainer.world_size > 1 else None
        if not self._grad_scaler():
            # The fused AdamW skips the update when found_inf is 1, as under GradScaler: no host sync.
            optimizer.found_inf = self.guard.observe(step, step_loss, norm, sum_over_ranks)
        else:
            # float16: GradScaler skips overflowing steps itself (and owns found_inf); watch the loss only.
            self.guard.observe(step, step_loss, torch.zeros_like(norm), sum_over_ranks)
        if is_logging_step(trainer) or step + 1 == trainer.max_steps:
            if not isinstance(trainer.strategy, FSDPStrategy):
                self.log("train/grad_norm", norm)
            self._check_guard()

    def _check_guard(self) -> None:
        """On logging steps: warn of spikes, count skipped steps, stop at a non-finite step over the limit."""
        failure, spikes, skipped = self.guard.check()
        for spike in spikes:
            rank_zero_warn(str(spike))
        if skipped:
            rank_zero_warn(
                f"skipped optimizer step(s) {skipped}: non-finite loss or gradient norm; {self.guard.skipped} "
                f"skipped so far (model.skip_nonfinite={self.guard.skip_nonfinite})"
            )
        self.log("train/nonfinite_steps", float(self.guard.skipped))
        if failure is None:
            return
        # No update has landed since the failing step (the guard keeps found_inf at 1; not so under
        # float16, where GradScaler owns found_inf): save that state.
        dirpath = getattr(self.trainer.checkpoint_callback, "dirpath", None) or self.trainer.default_root_dir
        path = str(Path(dirpath) / f"last_good_before_step_{failure.step}.ckpt")
        if failure.last_finite_loss is not None:
            self.last_step_loss = torch.tensor(failure.last_finite_loss)
        self.trainer.save_checkpoint(path)
        raise FlightMindError(failure.message(path, self.guard.skip_nonfinite, updates_held=not self._grad_scaler()))

    def _grad_scaler(self) -> bool:
        """float16 training: a GradScaler owns unscaling and skipping (absent outside a Trainer)."""
        return getattr(getattr(self.trainer, "precision_plugin", None), "scaler", None) is not None

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        if self._grad_scaler() or gradient_clip_algorithm not in (None, "norm"):
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        if isinstance(self.trainer.strategy, FSDPStrategy):
            # Each rank holds a shard of every gradient: the FSDP root computes the norm over all shards
            # (and returns it, before clipping).
            logging = is_logging_step(self.trainer)
            if gradient_clip_val or logging:
                norm = self.trainer.strategy.model.clip_grad_norm_(gradient_clip_val or float("inf"))
                if logging:
                    self.log("train/grad_norm", norm)
        elif gradient_clip_val:
            # Lightning's precision plugins refuse to clip for the fused AdamW, which could unscale float16
            # gradients itself; without a GradScaler they are already unscaled. The norm is the guard's.
            params = [p for p in self.parameters() if p.grad is not None]
            torch.nn.utils.clip_grads_with_norm_(params, gradient_clip_val, self._grad_norm)

    # -- validation ----------------------------------------------------------------------------
    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.val_loss.update(self.loss(batch), weight=batch.size(0))

    def on_validation_epoch_end(self) -> None:
        loss = self.val_loss.compute()  # torchmetrics reduces across DDP ranks
        self.val_loss.reset()
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)
        self.log("val/ppl", torch.exp(loss), sync_dist=True)

    # -- test: held-out documents, every token once (flightmind.data.heldout) --------------------
    def on_test_start(self) -> None:
        data_tokenizer = getattr(self.trainer.datamodule, "tokenizer_path", None)
        if self.tokenizer is None or data_tokenizer is None:
            return
        if tokenizer_hash(load_tokenizer(data_tokenizer)) != self.tokenizer["sha256"]:
            raise FlightMindError(
                f"the checkpoint was trained with another tokenizer than {data_tokenizer}: point data.data_dir "
                "at the directory the run was prepared in"
            )

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

    # -- optimizer -----------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        matrices = self._matrices or {id(p) for p in params if p.dim() >= 2}
        groups = [
            {"params": [p for p in params if id(p) in matrices], "weight_decay": hp.weight_decay},
            {"params": [p for p in params if id(p) not in matrices], "weight_decay": 0.0},
        ]
        # Fused (CUDA and CPU kernels): one kernel per step, and it honours found_inf (see TrainingGuard).
        # Under float16's GradScaler, Lightning unscales before clipping, which needs the unfused AdamW.
        optimizer = torch.optim.AdamW(
            groups, lr=hp.max_lr, betas=tuple(hp.betas), eps=hp.eps, fused=not self._grad_scaler()
        )
        max_steps = self.trainer.max_steps
        if max_steps is None or max_steps < 1:
            raise FlightMindError("set trainer.max_steps: the learning-rate schedule is built from it")
        min_lr = hp.min_lr if hp.min_lr is not None else hp.max_lr / 10
        scheduler = warmup_cosine(
            optimizer, max_lr=hp.max_lr, min_lr=min_lr, warmup_steps=hp.warmup_steps, max_steps=max_steps
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"}}

    # -- checkpoints ---------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["model_config"] = self.config.to_dict()
        if self.tokenizer is not None:
            # A checkpoint is enough to sample from (flightmind.model.checkpoint.load_trained).
            checkpoint["tokenizer"] = self.tokenizer
        if self.last_step_loss is not None:
            checkpoint["loss"] = float(self.last_step_loss)
        checkpoint["nonfinite_steps_skipped"] = self.guard.skipped

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.tokenizer = checkpoint.get("tokenizer", self.tokenizer)  # fit replaces it with the data's (on_fit_start)
        self.guard.skipped = checkpoint.get("nonfinite_steps_skipped", 0)
        saved = checkpoint.get("model_config")
        if saved is None:
            return
        for field, value in self.config.to_dict().items():
            if field in saved and saved[field] != value:
                path = self._trainer.ckpt_path if self._trainer is not None else None
                raise FlightMindError(
                    f"checkpoint {path or '(given)'} was trained with {field}={saved[field]!r} but this run configures "
                    f"{field}={value!r}: resume with the same model shape (model.{field}) or start a new run "
                    "without --ckpt_path"
                )


def _sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """All-reduce (sum) in place, queued on the device. Not ``strategy.reduce``: Lightning puts a
    barrier before its all-reduce, which would make the host wait for the device every step."""
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return tensor
