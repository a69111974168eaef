"""LoRA instruction fine-tuning: the loss-masked step on a frozen pretrained GPT.

A ``PretrainModule`` whose model is the base checkpoint's GPT with LoRA adapters on the chosen
projections: only the adapters train, so only they reach AdamW (the parent's optimizer groups take
parameters that require grad; the warm-up → cosine schedule and the logging are the parent's). The
loss is cross-entropy on the assistant's tokens only (labels ``IGNORE_INDEX`` elsewhere, see
data/chat.py). Validation and test also score the action: greedy decoding from each held-out
prompt, the first generated line parsed as JSON and compared with the reference action.

The model's shape is the base checkpoint's; the configuration names the checkpoint, not a depth.
Checkpoints written here hold the whole adapted model, ``lora`` (r, alpha, targets) and, as every
``PretrainModule`` checkpoint, the tokenizer (read from the datamodule's ``tokenizer_path``), so
``flightmind export`` and ``flightmind generate`` need nothing else.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from tokenizers import Tokenizer
from torchmetrics import MeanMetric

from flightmind.contracts import END, IGNORE_INDEX, eot_id, load_tokenizer, tokenizer_hash
from flightmind.data.chat import parse_action
from flightmind.errors import FlightMindError
from flightmind.model.checkpoint import build_model, read_checkpoint, read_model_config
from flightmind.model.generate import generate
from flightmind.model.lora import DEFAULT_TARGETS, apply_lora, check_targets, count_parameters, mark_only_lora_as_trainable
from flightmind.training.pretrain import PretrainModule


class FinetuneModule(PretrainModule):
    def __init__(
        self,
        base_checkpoint: str,
        lora_r: int = 16,
        lora_alpha: float = 32.0,
        lora_dropout: float = 0.05,
        lora_targets: tuple[str, ...] = DEFAULT_TARGETS,
        max_lr: float = 2e-4,
        min_lr: float | None = None,
        warmup_steps: int = 100,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        compile: bool = False,
        action_max_new_tokens: int = 48,
    ) -> None:
        """
        Args:
            base_checkpoint: a .ckpt written by ``flightmind fit`` (pretraining, or an earlier fine-tune,
                whose adapters are merged first); its ``model_config`` sets the model's shape.
            lora_r: rank r of every adapter.
            lora_alpha: α; the adapters' output is scaled by α/r.
            lora_dropout: dropout on the adapters' input while training.
            lora_targets: projections to adapt in every block: attention q, k, v, o; MLP gate, up, down.
            max_lr: peak learning rate, reached after ``warmup_steps`` optimizer steps.
            min_lr: floor of the cosine at ``trainer.max_steps``; ``max_lr / 10`` when unset.
            warmup_steps: optimizer steps of linear warm-up from 0.
            weight_decay: AdamW decay of the adapter matrices.
            betas: AdamW betas.
            eps: AdamW epsilon.
            compile: compile the model in place with ``torch.compile``.
            action_max_new_tokens: most tokens generated per prompt when scoring actions.
        """
        if not Path(base_checkpoint).is_file():
            raise FlightMindError(
                f"model.init_args.base_checkpoint {base_checkpoint} does not exist: pretrain first (`flightmind fit -c "
                "configs/smoke.yaml` writes checkpoints/smoke/final.ckpt) or name a checkpoint that does"
            )
        base = read_model_config(base_checkpoint)
        check_targets(lora_targets)
        super().__init__(
            depth=base.depth,
            vocab_size=base.vocab_size,
            max_seq_len=base.max_seq_len,
            max_lr=max_lr,
            min_lr=min_lr,
            warmup_steps=warmup_steps,
            weight_decay=weight_decay,
            betas=betas,
            eps=eps,
            compile=compile,
        )
        self.config = base
        self.val_action = MeanMetric()
        self.test_loss = MeanMetric()
        self.test_action = MeanMetric()
        self._newline_ids: set[int] | None = None
        self._trainable_params: int | None = None
        self._base_tokenizer_sha: str | None = None  # of the tokenizer the base checkpoint carries

    @property
    def lora_settings(self) -> dict:
        hp = self.hparams
        return {"r": hp.lora_r, "alpha": float(hp.lora_alpha), "targets": list(hp.lora_targets)}

    # -- model ---------------------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.model is not None:
            return
        hp = self.hparams
        base = read_checkpoint(hp.base_checkpoint)
        self._base_tokenizer_sha = None if base.tokenizer is None else tokenizer_hash(base.tokenizer)
        model = build_model(base)
        apply_lora(model, r=hp.lora_r, alpha=hp.lora_alpha, dropout=hp.lora_dropout, targets=hp.lora_targets)
        mark_only_lora_as_trainable(model)
        self.model = model
        trainable, total = count_parameters(model)
        rank_zero_info(
            f"LoRA r={hp.lora_r} α={hp.lora_alpha:g} on {', '.join(hp.lora_targets)} of d{self.config.depth} "
            f"({hp.base_checkpoint}): {trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.2f}%)"
        )
        if hp.compile:
            model.compile()

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy over the batch's assistant tokens (targets other than IGNORE_INDEX)."""
        logits = self.model(batch["input_ids"])
        return F.cross_entropy(logits.flatten(0, 1).float(), batch["targets"].flatten(), ignore_index=IGNORE_INDEX)

    def flops_per_token(self, seq_len: int) -> int:
        """Frozen weights get no weight gradient: 2N forward + 2N input gradients, plus attention and
        the adapters' full 6 FLOPs per parameter."""
        c = self.config
        if self._trainable_params is None:
            self._trainable_params = count_parameters(self.model)[0]
        return 4 * c.matmul_params() + 12 * c.n_layer * c.dim * seq_len + 6 * self._trainable_params

    # -- training ------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self._check_tokenizer()
        super().on_fit_start()
        max_seq_len = getattr(self.trainer.datamodule, "max_seq_len", None)
        if max_seq_len is not None and max_seq_len > self.config.max_seq_len:
            raise FlightMindError(
                f"data.max_seq_len={max_seq_len} exceeds the base model's max_seq_len={self.config.max_seq_len} "
                f"({self.hparams.base_checkpoint}): lower data.max_seq_len"
            )

    def _check_tokenizer(self) -> None:
        """The data must be tokenized as the base was pretrained: the same ids mean the same pieces."""
        datamodule, base = self.trainer.datamodule, self.hparams.base_checkpoint
        tokenizer_path = getattr(datamodule, "tokenizer_path", None)
        if tokenizer_path is None:
            return
        tokenizer = getattr(datamodule, "tokenizer", None) or load_tokenizer(tokenizer_path)  # loaded in setup
        if self._base_tokenizer_sha is not None and tokenizer_hash(tokenizer) != self._base_tokenizer_sha:
            raise FlightMindError(
                f"{tokenizer_path} is not the tokenizer {base} was pretrained with: set data.tokenizer_path to that "
                "run's tokenizer.json (the prepared data directory's, or `flightmind export` the base and use its copy)"
            )
        data_vocab = getattr(datamodule, "vocab_size", None)
        if data_vocab is not None and data_vocab > self.config.vocab_size:
            raise FlightMindError(
                f"the tokenizer {tokenizer_path} has {data_vocab} tokens but the base {base} has "
                f"{self.config.vocab_size} embedding rows: fine-tune with the tokenizer the base was pretrained with"
            )

    def on_train_start(self) -> None:
        super().on_train_start()
        trainable, total = count_parameters(self.model)
        for logger in self.loggers:
            logger.log_metrics({"params/trainable": trainable, "params/total": total}, step=self.global_step)

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        B, T = batch["input_ids"].shape
        self.flops_per_batch = self.flops_per_token(T) * B * T

    # -- validation and test -------------------------------------------------------------------
    def _tokenizer(self) -> Tokenizer:
        tokenizer = getattr(self.trainer.datamodule, "tokenizer", None)
        if tokenizer is None:
            raise FlightMindError("action accuracy needs the datamodule's tokenizer: use flightmind.data.finetune.FinetuneDataModule")
        return tokenizer

    def action_scores(self, examples: list[dict]) -> torch.Tensor:
        """1.0 where greedy decoding from ``prompt`` gives the JSON ``action`` (compared parsed), else 0.0."""
        tokenizer = self._tokenizer()
        if self._newline_ids is None:
            pieces = tokenizer.decode_batch([[i] for i in range(tokenizer.get_vocab_size())], skip_special_tokens=False)
            self._newline_ids = {i for i, piece in enumerate(pieces) if "\n" in piece}
        stop_ids = (tokenizer.token_to_id(END), eot_id(tokenizer))
        scores = []
        for example in examples:
            answer = []
            for token in generate(self.model, example["prompt"], self.hparams.action_max_new_tokens, temperature=0.0, stop_ids=stop_ids):
                answer.append(token)
                if token in self._newline_ids:  # the action is the first line; the readback is not scored
                    break
            scores.append(float(parse_action(tokenizer.decode(answer)) == example["action"]))
        return torch.tensor(scores, device=self.device)

    def _score_actions(self, metric: MeanMetric) -> bool:
        """Score this rank's share of the datamodule's ``action_set`` into ``metric``. The answer,
        whether anything was scored, is the same on every rank, so all of them reduce the metric."""
        examples = getattr(self.trainer.datamodule, "action_set", None)
        if not examples or self.trainer.sanity_checking:
            return False
        mine = examples[self.global_rank :: self.trainer.world_size]
        if mine:
            with self.trainer.precision_plugin.forward_context():  # epoch-end hooks run outside autocast
                metric.update(self.action_scores(mine))
        return True

    def _log_eval(self, stage: str, loss_metric: MeanMetric, action_metric: MeanMetric) -> None:
        if self._score_actions(action_metric):
            self.log(f"{stage}/action_acc", action_metric.compute(), prog_bar=True, sync_dist=True)
        if loss_metric.update_count:
            loss = loss_metric.compute()  # torchmetrics reduces across DDP ranks
            self.log(f"{stage}/loss", loss, prog_bar=True, sync_dist=True)
            self.log(f"{stage}/ppl", torch.exp(loss), sync_dist=True)
        loss_metric.reset()
        action_metric.reset()

    def _loss_update(self, batch: dict[str, torch.Tensor], metric: MeanMetric) -> None:
        metric.update(self.loss(batch), weight=(batch["targets"] != IGNORE_INDEX).sum())

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._loss_update(batch, self.val_loss)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val", self.val_loss, self.val_action)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._loss_update(batch, self.test_loss)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", self.test_loss, self.test_action)

    # -- checkpoints ---------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["lora"] = self.lora_settings

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get("lora")
        if saved is None:
            raise FlightMindError(
                f"checkpoint {self._trainer.ckpt_path if self._trainer else ''} has no LoRA adapters: to fine-tune "
                "from a pretraining checkpoint, name it in model.init_args.base_checkpoint instead of --ckpt_path"
            )
        for key, value in self.lora_settings.items():
            if saved.get(key) != value:
                raise FlightMindError(
                    f"checkpoint {self._trainer.ckpt_path if self._trainer else ''} was fine-tuned with LoRA "
                    f"{key}={saved.get(key)!r} but this run configures {key}={value!r} (model.init_args.lora_{key}): "
                    "use the checkpoint's settings"
                )
