"""LoRA instruction fine-tuning: the assistant-only loss on a frozen pretrained GPT with adapters.

What the stage adds to the causal-LM core (causal_lm.py): the model is the base checkpoint's GPT
(its shape, its weights, its tokenizer) with LoRA adapters on the chosen projections, of which
only the adapters train; the loss counts assistant tokens only (``IGNORE_INDEX`` elsewhere, see
data/chat.py); validation and test also score the action: greedy decoding from each held-out
prompt, the first generated line parsed as JSON and compared with the reference action.
Checkpoints add ``lora`` (r, alpha, targets), so ``export`` and ``generate`` need nothing else.
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import MeanMetric

from flightmind.contracts import END, IGNORE_INDEX, ChatData, eot_id
from flightmind.data.chat import parse_action
from flightmind.errors import FlightMindError
from flightmind.model import GPT
from flightmind.model.checkpoint import SavedModel, build_model, read_checkpoint, read_model_config, tokenizer_entry
from flightmind.model.generate import generate
from flightmind.model.lora import DEFAULT_TARGETS, apply_lora, check_targets, count_parameters, mark_only_lora_as_trainable
from flightmind.training.causal_lm import CausalLM
from flightmind.training.guards import GuardSettings
from flightmind.training.optimizer import OptimizerSettings
from flightmind.training.parallel import ActivationCheckpointing

FINETUNE_OPTIMIZER = OptimizerSettings(max_lr=2e-4, warmup_steps=100, weight_decay=0.0)


class FinetuneModule(CausalLM):
    def __init__(
        self,
        base_checkpoint: str,
        lora_r: int = 16,
        lora_alpha: float = 32.0,
        lora_dropout: float = 0.05,
        lora_targets: tuple[str, ...] = DEFAULT_TARGETS,
        optimizer: OptimizerSettings = FINETUNE_OPTIMIZER,
        guard: GuardSettings = GuardSettings(),
        compile: bool = False,
        activation_checkpointing: ActivationCheckpointing | bool = False,
        action_max_new_tokens: int = 48,
    ) -> None:
        """
        Args:
            base_checkpoint: a .ckpt written by ``flightmind fit`` (pretraining, or an earlier fine-tune,
                whose adapters are merged first); it sets the model's shape, weights and tokenizer.
            lora_r: rank r of every adapter.
            lora_alpha: α; the adapters' output is scaled by α/r.
            lora_dropout: dropout on the adapters' input while training.
            lora_targets: projections to adapt in every block: attention q, k, v, o; MLP gate, up, down.
            optimizer: AdamW (on the adapters only) and the warm-up → cosine schedule.
            guard: what to do about non-finite steps and loss spikes.
            compile: compile every block in place with ``torch.compile``.
            activation_checkpointing: recompute activations in backward (none, full, selective; see pretrain).
            action_max_new_tokens: most tokens generated per prompt when scoring actions.
        """
        super().__init__(optimizer, guard, compile, activation_checkpointing)
        if not Path(base_checkpoint).exists():  # a .ckpt file, or an FSDP2 run's checkpoint directory
            raise FlightMindError(
                f"model.init_args.base_checkpoint {base_checkpoint} does not exist: pretrain first (`flightmind fit -c "
                "configs/smoke.yaml` writes checkpoints/smoke/final.ckpt) or name a checkpoint that does"
            )
        self.config = read_model_config(base_checkpoint)
        check_targets(lora_targets)
        self.save_hyperparameters({
            "base_checkpoint": base_checkpoint, "lora_r": lora_r, "lora_alpha": lora_alpha,
            "lora_dropout": lora_dropout, "lora_targets": list(lora_targets), "optimizer": vars(optimizer),
            "guard": vars(guard), "compile": compile, "activation_checkpointing": vars(ActivationCheckpointing.of(activation_checkpointing)),
            "action_max_new_tokens": action_max_new_tokens,
        })  # fmt: skip
        self.val_action = MeanMetric()
        self.test_loss = MeanMetric()
        self.test_action = MeanMetric()
        self._base: SavedModel | None = None  # read in setup, released once the model is built
        self._newline_ids: set[int] | None = None
        self._trainable_params: int | None = None

    @property
    def lora_settings(self) -> dict:
        hp = self.hparams
        return {"r": hp.lora_r, "alpha": float(hp.lora_alpha), "targets": list(hp.lora_targets)}

    # -- model ---------------------------------------------------------------------------------------
    def base(self) -> SavedModel:
        if self._base is None:
            self._base = read_checkpoint(self.hparams.base_checkpoint)
        return self._base

    def expected_tokenizer(self) -> tuple[dict | None, str]:
        tokenizer = self.base().tokenizer
        entry = None if tokenizer is None else tokenizer_entry(tokenizer.to_str())
        return entry, f"the base {self.hparams.base_checkpoint}"

    def build_model(self) -> GPT:
        hp = self.hparams
        model = build_model(self.base())
        self._base = None
        apply_lora(model, r=hp.lora_r, alpha=hp.lora_alpha, dropout=hp.lora_dropout, targets=hp.lora_targets)
        mark_only_lora_as_trainable(model)
        trainable, total = count_parameters(model)
        rank_zero_info(
            f"LoRA r={hp.lora_r} α={hp.lora_alpha:g} on {', '.join(hp.lora_targets)} of d{self.config.depth} "
            f"({hp.base_checkpoint}): {trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.2f}%)"
        )
        return model

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy over the batch's assistant tokens (targets other than IGNORE_INDEX)."""
        return self._cross_entropy(self.model(batch["input_ids"]), batch["targets"])

    def loss_weight(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return (batch["targets"] != IGNORE_INDEX).sum()

    def batch_shape(self, batch: dict[str, torch.Tensor]) -> tuple[int, int]:
        return tuple(batch["input_ids"].shape)

    def flops_per_token(self, seq_len: int) -> int:
        """Frozen weights get no weight gradient: 2N forward + 2N input gradients, plus attention and
        the adapters' full 6 FLOPs per parameter."""
        c = self.config
        if self._trainable_params is None:
            self._trainable_params = count_parameters(self.model)[0]
        return 4 * c.matmul_params() + 12 * c.n_layer * c.attn_dim * seq_len + 6 * self._trainable_params

    def on_train_start(self) -> None:
        super().on_train_start()
        trainable, total = count_parameters(self.model)
        for logger in self.loggers:
            logger.log_metrics({"params/trainable": trainable, "params/total": total}, step=self.global_step)

    # -- action accuracy -----------------------------------------------------------------------------
    def action_scores(self, examples: list[dict]) -> torch.Tensor:
        """1.0 where greedy decoding from ``prompt`` gives the JSON ``action`` (compared parsed), else 0.0."""
        tokenizer = self.trainer.datamodule.tokenizer()
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
        data = self.trainer.datamodule
        examples = data.action_set if isinstance(data, ChatData) else None
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
        action_metric.reset()
        self.log_eval_loss(stage, loss_metric)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val", self.val_loss, self.val_action)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.test_loss.update(self.loss(batch), weight=self.loss_weight(batch))

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", self.test_loss, self.test_action)

    # -- checkpoints ---------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["lora"] = self.lora_settings

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        path = self._trainer.ckpt_path if self._trainer else ""
        saved = checkpoint.get("lora")
        if saved is None:
            raise FlightMindError(
                f"checkpoint {path} has no LoRA adapters: to fine-tune from a pretraining checkpoint, name it in "
                "model.init_args.base_checkpoint instead of --ckpt_path"
            )
        for key, value in self.lora_settings.items():
            if saved.get(key) != value:
                raise FlightMindError(
                    f"checkpoint {path} was fine-tuned with LoRA {key}={saved.get(key)!r} but this run configures "
                    f"{key}={value!r} (model.init_args.lora_{key}): use the checkpoint's settings"
                )
        super().on_load_checkpoint(checkpoint)
