import logging
from types import SimpleNamespace

import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.precision import Precision

from flightmind.data.datamodule import PretrainDataModule
from flightmind.model import GPT, GPTConfig
from flightmind.training.samples import SPEC_PROMPTS, SampleGeneration


class RecordingTensorBoard(TensorBoardLogger):
    """A TensorBoardLogger whose experiment records add_text calls instead of writing events."""

    def __init__(self, root):
        super().__init__(root)
        self.texts = []

    @property
    def experiment(self):
        return SimpleNamespace(add_text=lambda tag, text, global_step: self.texts.append((tag, text, global_step)))


def fake_trainer(prepared_dir, rank, logger):
    return SimpleNamespace(
        datamodule=PretrainDataModule(data_dir=str(prepared_dir)),
        strategy=object(),
        is_global_zero=rank == 0,
        sanity_checking=False,
        loggers=[logger],
        global_step=40,
        precision_plugin=Precision(),
    )


def test_samples_are_logged_on_rank_zero_only_every_n_validations(prepared_dir, tmp_path, caplog):
    torch.manual_seed(0)
    module = SimpleNamespace(model=GPT(GPTConfig.from_depth(2, vocab_size=1024, max_seq_len=64)).train())
    logged = {}
    for rank in (0, 1):
        logger = RecordingTensorBoard(tmp_path / str(rank))
        trainer = fake_trainer(prepared_dir, rank, logger)
        callback = SampleGeneration(every_n_validations=2, prompts=["Cleared for takeoff,"], max_new_tokens=8)
        callback.setup(trainer, module, "fit")
        with caplog.at_level(logging.INFO):
            callback.on_validation_end(trainer, module)  # validation 1 of 2: nothing yet
            assert logger.texts == []
            callback.on_validation_end(trainer, module)
        logged[rank] = logger.texts
    assert logged[1] == []  # rank 1 neither generates nor logs
    ((tag, text, step),) = logged[0]
    assert (tag, step) == ("samples", 40)
    for prompt in (*SPEC_PROMPTS, "Cleared for takeoff,"):
        assert f"**{prompt}**" in text
    assert text.count("greedy:") == 5 and text.count("sampled (temperature 0.8, top-k 50, seed 0):") == 5
    assert "samples at step 40" in caplog.text  # and on the console
    assert module.model.training  # the model is back in training mode


def test_sampled_completions_repeat_with_the_seed(prepared_dir, tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(2, vocab_size=1024, max_seq_len=64))
    trainer = fake_trainer(prepared_dir, 0, RecordingTensorBoard(tmp_path))
    callback = SampleGeneration(max_new_tokens=6, seed=3)
    callback.setup(trainer, SimpleNamespace(model=model), "fit")
    assert callback.complete_prompts(trainer, model) == callback.complete_prompts(trainer, model)
