"""Sample generation during training: the spec's aviation prompts, completed every N validations.

Numbers don't tell the whole story: a model with good perplexity can still write nonsense. After
every N-th validation, rank 0 completes each prompt twice — greedy, and sampled with a fixed seed so
that samples of successive validations are comparable — and writes them to TensorBoard's text tab
(tag ``samples``) and to the console.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from flightmind.contracts import TokenData
from flightmind.model.generate import complete

# The spec's built-in prompts: aviation knowledge, procedures, weather, regulations.
SPEC_PROMPTS = (
    "The Cessna 172 is powered by a",
    "On approach to landing,",
    "A METAR report showing TSRA indicates",
    "A private pilot certificate requires",
)


class SampleGeneration(L.Callback):
    def __init__(
        self,
        every_n_validations: int = 1,
        prompts: list[str] | None = None,
        max_new_tokens: int = 48,
        temperature: float = 0.8,
        top_k: int | None = 50,
        seed: int = 0,
    ) -> None:
        """
        Args:
            every_n_validations: complete the prompts after every N-th validation (0: never).
            prompts: prompts to complete after the spec's four.
            max_new_tokens: tokens per completion at most.
            temperature: temperature of the sampled completion (the other one is greedy).
            top_k: the sampled completion picks among the k most likely tokens.
            seed: seed of the sampled completion, the same at every validation.
        """
        self.every_n_validations = every_n_validations
        self.prompts = [*SPEC_PROMPTS, *(prompts or [])]
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_k = top_k
        self.seed = seed
        self.validations = 0
        self.tokenizer = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.every_n_validations < 1 or stage != "fit":
            return
        data = trainer.datamodule
        if isinstance(trainer.strategy, (FSDPStrategy, ModelParallelStrategy, DeepSpeedStrategy)):
            # Sharded weights: rank 0 alone cannot run the model.
            rank_zero_warn("sample generation is off: it needs the whole model on rank 0 (DDP or one device)")
        elif not isinstance(data, TokenData):
            rank_zero_warn("sample generation is off: the datamodule has no tokenizer (flightmind.contracts.TokenData)")
        elif trainer.is_global_zero:
            self.tokenizer = data.tokenizer()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.every_n_validations < 1:
            return
        self.validations += 1
        if self.validations % self.every_n_validations or not trainer.is_global_zero or self.tokenizer is None:
            return
        text = self.render(self.complete_prompts(trainer, pl_module.model))
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("samples", text, global_step=trainer.global_step)
        rank_zero_info(f"samples at step {trainer.global_step}:\n{text}")

    @torch.no_grad()
    def complete_prompts(self, trainer: L.Trainer, model: torch.nn.Module) -> list[tuple[str, str, str]]:
        """(prompt, greedy completion, sampled completion) for each prompt."""
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        results = []
        with trainer.precision_plugin.forward_context():
            for prompt in self.prompts:
                greedy = complete(model, self.tokenizer, prompt, self.max_new_tokens, temperature=0.0)
                generator = torch.Generator(device).manual_seed(self.seed)
                sampled = complete(
                    model, self.tokenizer, prompt, self.max_new_tokens,
                    temperature=self.temperature, top_k=self.top_k, generator=generator,
                )
                results.append((prompt, greedy.text, sampled.text))
        model.train(was_training)
        return results

    def render(self, results: list[tuple[str, str, str]]) -> str:
        """Markdown for TensorBoard's text tab; each completion in a code block, so whitespace shows."""
        sampled = f"sampled (temperature {self.temperature}, top-k {self.top_k}, seed {self.seed})"
        blocks = []
        for prompt, greedy, sample in results:
            blocks.append(f"**{prompt}**\n\ngreedy:\n\n{_code(prompt + greedy)}\n\n{sampled}:\n\n{_code(prompt + sample)}")
        return "\n\n".join(blocks)

    def state_dict(self) -> dict:
        return {"validations": self.validations}

    def load_state_dict(self, state_dict: dict) -> None:
        self.validations = state_dict["validations"]


def _code(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines() or [""])
