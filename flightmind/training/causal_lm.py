"""The causal-LM core of every training stage: model, optimizer, schedule, guard, clipping, logging,
FLOPs, checkpoint metadata and the one tokenizer check.

A stage subclasses ``CausalLM`` and adds only what differs: how its GPT is built (``build_model``),
its loss (``loss``, ``loss_weight``) and whatever it evaluates beyond the validation loss.
``PretrainModule`` (pretrain.py) and ``FinetuneModule`` (finetune.py) are the two stages.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch.distributed.tensor import DTensor
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from tokenizers import Tokenizer
from torchmetrics import MeanMetric

from flightmind.contracts import TokenData
from flightmind.errors import FlightMindError
from flightmind.model import GPT, GPTConfig
from flightmind.model.attention import kernel_used
from flightmind.model.checkpoint import tokenizer_entry
from flightmind.training.internals import ends_optimizer_step, is_logging_step, skip_update_on_device
from flightmind.training.guards import GuardSettings, TrainingGuard
from flightmind.training.optimizer import OptimizerSettings, configure_adamw
from flightmind.training.parallel import ActivationCheckpointing, parallelize, set_gradient_sync


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean next-token cross-entropy of logits (B, T, V) against targets (B, T), in fp32, skipping ``ignore_index``."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=ignore_index)


class CausalLM(L.LightningModule):
    """
    Args (shared by every stage; each stage's ``__init__`` lists them again for the CLI):
        optimizer: AdamW and the warm-up → cosine schedule.
        guard: what to do about non-finite steps and loss spikes.
        compile: compile every block in place with ``torch.compile`` (checkpoint keys unchanged), and the loss.
        activation_checkpointing: recompute activations during backward instead of storing them: none,
            full (every k-th block) or selective (see flightmind.training.parallel); ``true`` is full.
    """

    def __init__(
        self,
        optimizer: OptimizerSettings,
        guard: GuardSettings,
        compile: bool = False,
        activation_checkpointing: ActivationCheckpointing | bool = False,
    ) -> None:
        super().__init__()
        self.optimizer_settings = optimizer
        self.compile_model = compile
        self.activation_checkpointing = ActivationCheckpointing.of(activation_checkpointing)
        self.config: GPTConfig | None = None  # the stage sets it; vocab_size may wait for the tokenizer (setup)
        self.model: GPT | None = None
        self._cross_entropy = cross_entropy
        self._matrices: set[int] = set()  # ids of the ≥ 2-dim parameters, recorded while they are whole
        self.val_loss = MeanMetric()
        self._loss_sum: torch.Tensor | None = None
        self._loss_count = 0
        self.last_step_loss: torch.Tensor | None = None
        self._grad_norm: torch.Tensor | None = None  # measured before clipping, every optimizer step
        self.flops_per_batch: int | None = None  # read by ThroughputMonitor for FLOP/s and MFU
        self.guard = TrainingGuard(guard)
        self.tokenizer: dict | None = None  # the data's tokenizer {"json", "sha256"}, copied into every checkpoint
        self._tokenizer_source: str | None = None
        self._vocab_follows_tokenizer = False

    # -- what a stage provides ---------------------------------------------------------------------
    def build_model(self) -> GPT:
        """The stage's GPT for ``self.config`` (called once, in ``configure_model``)."""
        raise NotImplementedError

    def loss(self, batch) -> torch.Tensor:
        """Mean loss of a batch."""
        raise NotImplementedError

    def loss_weight(self, batch) -> torch.Tensor | int:
        """What the batch's mean loss is averaged over (validation weighs batches by it)."""
        raise NotImplementedError

    def batch_shape(self, batch) -> tuple[int, int]:
        """(sequences, positions) the batch trains."""
        raise NotImplementedError

    def flops_per_token(self, seq_len: int) -> int:
        return self.config.flops_per_token(seq_len)

    def expected_tokenizer(self) -> tuple[dict | None, str]:
        """The tokenizer the model was trained with before this run, if any, and where it comes from."""
        return None, ""

    # -- the data contract ---------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        data = self.trainer.datamodule
        if data is None:  # plain dataloaders (tests, notebooks): the shape must be complete
            if self.config.vocab_size is None:
                raise FlightMindError("model.shape.vocab_size is unset and there is no datamodule to take it from")
            return
        if not isinstance(data, TokenData):
            raise FlightMindError(
                f"data.class_path {type(data).__name__} does not provide what training reads (flightmind.contracts."
                "TokenData: batch_size, seq_len, tokenizer_path, tokenizer()): use one of flightmind's data modules"
            )
        tokenizer = data.tokenizer()
        self._tokenizer_source = str(data.tokenizer_path)
        self.tokenizer = tokenizer_entry(Path(data.tokenizer_path).read_text(encoding="utf-8"))  # as the file says
        self._check_tokenizer(*self.expected_tokenizer())
        self._fit_vocab(tokenizer)
        if data.seq_len > self.config.max_seq_len:
            raise FlightMindError(
                f"data.seq_len={data.seq_len} exceeds the model's max_seq_len={self.config.max_seq_len}: lower "
                "data.seq_len or raise model.shape.max_seq_len"
            )

    def _fit_vocab(self, tokenizer: Tokenizer) -> None:
        size = tokenizer.get_vocab_size()
        if self.config.vocab_size is None:
            self.config = self.config.with_vocab(size)
            self._vocab_follows_tokenizer = True
            rank_zero_info(
                f"vocabulary: {size:,} tokens in {self._tokenizer_source} → model.shape.vocab_size "
                f"{self.config.vocab_size:,} (rounded up to a multiple of 128; set it to override)"
            )
        elif size > self.config.vocab_size:
            raise FlightMindError(
                f"the tokenizer {self._tokenizer_source} has {size:,} tokens but the model has "
                f"{self.config.vocab_size:,} embedding rows: raise model.shape.vocab_size to at least {size:,} "
                "(or leave it unset to follow the tokenizer), or use the tokenizer the model was trained with"
            )

    def _check_tokenizer(self, expected: dict | None, source: str) -> None:
        """The one tokenizer check: the data must be tokenized as the model was trained."""
        if expected is None or self.tokenizer is None or expected.get("sha256") == self.tokenizer["sha256"]:
            return
        raise FlightMindError(
            f"{source} was trained with another tokenizer (sha256 {expected.get('sha256', '?')[:12]}…) than the data's "
            f"{self._tokenizer_source} (sha256 {self.tokenizer['sha256'][:12]}…): prepare the data with that "
            "model's tokenizer (`flightmind prepare --tokenizer …`; `flightmind export` writes it out), or start a "
            "new run without it"
        )

    # -- model ---------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        """Build (and optionally compile) the GPT once, on the device the strategy chose."""
        if self.model is not None:
            return
        self.model = self.build_model()
        self.config = self.model.config  # complete: a bare GPT fills in an unset vocabulary
        if "shape" in self.hparams:  # hparams.yaml (written after this) shows the shape that trains
            self.save_hyperparameters({**self.hparams, "shape": self.config.to_dict()})
        # Checkpointing, per-block compile and, under ModelParallelStrategy (a device mesh), FSDP2.
        precision = self._trainer.precision if self._trainer is not None else None
        parallelize(self.model, self.device_mesh, checkpointing=self.activation_checkpointing,
                    compile=self.compile_model, precision=precision)
        # FSDP (v1) later turns every parameter into a 1-dim view of its shard (the same Parameter
        # objects): decide weight decay by the shape each has now (FSDP2's DTensors keep their shape).
        self._matrices = {id(p) for p in self.model.parameters() if p.dim() >= 2}
        if self.compile_model:
            # Compiled, the loss never materializes fp32 copies of the logits: 2 bytes per logit, not 12
            # (benchmarks/loss_memory.py).
            self._cross_entropy = torch.compile(cross_entropy)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)

    # -- training ------------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        trainer, data = self.trainer, self.trainer.datamodule
        log_attention_kernel(self.config, self.device, trainer)
        if isinstance(data, TokenData):
            tokens = data.batch_size * trainer.accumulate_grad_batches * trainer.world_size * data.seq_len
            rank_zero_info(
                f"FlightMind d{self.config.depth}: {self.config.num_params() / 1e6:.1f}M parameters; "
                f"{tokens:,} tokens per optimizer step = micro-batch {data.batch_size} × accumulation "
                f"{trainer.accumulate_grad_batches} × {trainer.num_devices} devices × {trainer.num_nodes} nodes "
                f"× sequence {data.seq_len}"
            )

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # FSDP2: reduce-scatter once per optimizer step, not on every micro-batch. Lightning says which
        # micro-batch ends a step only through the private _should_accumulate (as is_logging_step reads
        # it); tests/training/test_fsdp2.py counts the reduce-scatters and fails if that changes.
        set_gradient_sync(self.model, ends_optimizer_step(self.trainer))
        B, T = self.batch_shape(batch)
        self.flops_per_batch = self.flops_per_token(T) * B * T

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
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
        if isinstance(norm, DTensor):  # FSDP2: the norm over every rank's shards
            norm = norm.full_tensor()
        self._grad_norm = norm  # clipping reuses it
        sum_over_ranks = _sum_over_ranks if trainer.world_size > 1 else None
        if not self._grad_scaler():
            # The fused AdamW skips the update when found_inf is 1, as under GradScaler: no host sync.
            skip_update_on_device(optimizer, self.guard.observe(step, step_loss, norm, sum_over_ranks))
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
                f"skipped so far (model.guard.skip_nonfinite={self.guard.skip_nonfinite})"
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

    def configure_optimizers(self):
        params = list(self.parameters())
        matrices = self._matrices or {id(p) for p in params if p.dim() >= 2}
        return configure_adamw(
            params, matrices, self.optimizer_settings, max_steps=self.trainer.max_steps, fused=not self._grad_scaler()
        )

    # -- validation ----------------------------------------------------------------------------------
    def validation_step(self, batch, batch_idx: int) -> None:
        self.val_loss.update(self.loss(batch), weight=self.loss_weight(batch))

    def log_eval_loss(self, stage: str, metric: MeanMetric) -> None:
        """Log ``{stage}/loss`` and ``{stage}/ppl`` (torchmetrics reduces across ranks) and reset the metric."""
        if metric.update_count:
            loss = metric.compute()
            self.log(f"{stage}/loss", loss, prog_bar=True, sync_dist=True)
            self.log(f"{stage}/ppl", torch.exp(loss), sync_dist=True)
        metric.reset()

    def on_validation_epoch_end(self) -> None:
        self.log_eval_loss("val", self.val_loss)

    # -- checkpoints ---------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["model_config"] = self.config.to_dict()
        if self.tokenizer is not None:
            # A checkpoint is enough to sample from (flightmind.model.checkpoint.load_trained).
            checkpoint["tokenizer"] = self.tokenizer
        if self.last_step_loss is not None:
            checkpoint["loss"] = float(self.last_step_loss)
        checkpoint["nonfinite_steps_skipped"] = self.guard.skipped

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        path = self._trainer.ckpt_path if self._trainer is not None else None
        source = f"checkpoint {path or '(given)'}"
        self._check_tokenizer(checkpoint.get("tokenizer"), source)
        if self.tokenizer is None:
            self.tokenizer = checkpoint.get("tokenizer")
        self.guard.skipped = checkpoint.get("nonfinite_steps_skipped", 0)
        if "model_config" not in checkpoint:
            return
        saved = GPTConfig.from_dict(checkpoint["model_config"])  # earlier versions' missing fields: their values
        if self._vocab_follows_tokenizer and saved.vocab_size != self.config.vocab_size and self.model is not None:
            # The vocabulary was left to follow the tokenizer: a resumed run keeps the checkpoint's.
            self._rebuild_with_vocab(saved.vocab_size)
        for field, value in self.config.to_dict().items():
            if field not in GPTConfig.RUNTIME_FIELDS and getattr(saved, field) != value:
                raise FlightMindError(
                    f"{source} was trained with {field}={getattr(saved, field)!r} but this run configures "
                    f"{field}={value!r}: resume with the same model shape (model.shape.{field}) or start a new run "
                    "without --ckpt_path"
                )

    def _rebuild_with_vocab(self, vocab_size: int) -> None:
        if self.trainer.strategy.restore_checkpoint_after_setup:  # sharded strategies restore into built shards
            raise FlightMindError(
                f"the checkpoint has {vocab_size:,} embedding rows: set model.shape.vocab_size: {vocab_size} to resume it"
            )
        rank_zero_info(f"vocabulary: the checkpoint's {vocab_size:,} embedding rows (resuming)")
        self.config = replace(self.config, vocab_size=vocab_size)
        self.model = None
        self.configure_model()


def log_attention_kernel(config: GPTConfig, device: torch.device, trainer: L.Trainer) -> str:
    """Name, once at the start, the SDPA kernel the model's attention runs (model.shape.attention)."""
    with trainer.precision_plugin.forward_context():
        dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else torch.float32
    try:
        kernel = kernel_used(config.attention, config.n_head, config.n_kv_head, config.head_size, device, dtype)
    except RuntimeError as e:
        raise FlightMindError(
            f"model.shape.attention={config.attention!r}: that kernel cannot run here ({str(e).splitlines()[0][:160]}); "
            "choose auto or another kernel"
        ) from None
    rank_zero_info(f"attention: SDPA kernel {kernel} (model.shape.attention={config.attention}, {dtype})")
    return kernel


def _sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """All-reduce (sum) in place, queued on the device. Not ``strategy.reduce``: Lightning puts a
    barrier before its all-reduce, which would make the host wait for the device every step."""
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return tensor
