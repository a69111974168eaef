"""Every user mistake in every command: a non-zero exit, one `flightmind: error:` line naming what to fix, no traceback.

The commands run in this process through ``flightmind.cli.main`` (as the console script does, minus
the interpreter start); stderr may also hold Lightning's start-up lines, so the test counts error lines.
"""

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from flightmind.cli import main
from tests.helpers import LORA, fine_tuned, write_checkpoint
from tests.training.test_checkpoint_io import evil_checkpoint
from tests.training.tiny import tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(prepared_dir, tmp_path_factory):
    """Files the bad inputs refer to: a tiny config, a trained checkpoint and broken ones."""
    root = tmp_path_factory.mktemp("bad_inputs")
    config = tiny_config(root / "tiny.yaml", prepared_dir, root / "ckpts", max_steps=4, every=2)
    assert main(["fit", "-c", str(config)]) == 0
    trained = root / "ckpts" / "final.ckpt"
    checkpoint = torch.load(trained, weights_only=True)
    files = {"config": config, "trained": trained, "data": prepared_dir, "root": root}
    files["empty"] = root / "empty.ckpt"
    files["empty"].write_bytes(b"")
    files["random"] = root / "random.ckpt"
    files["random"].write_bytes(random.Random(0).randbytes(4096))
    files["truncated"] = root / "truncated.ckpt"
    files["truncated"].write_bytes(trained.read_bytes()[: trained.stat().st_size // 2])
    files["marker"] = root / "PWNED"
    files["evil"] = evil_checkpoint(root / "evil.ckpt", files["marker"])
    tokenizer_json = (prepared_dir / "tokenizer.json").read_text()
    files["lora"] = write_checkpoint(root / "lora.ckpt", fine_tuned(), lora=LORA, tokenizer_json=tokenizer_json)
    torch.save({**torch.load(files["lora"], weights_only=True), "pytorch-lightning_version": "2.6.6"}, files["lora"])
    files["weights_only"] = write_checkpoint(root / "weights_only.ckpt", fine_tuned(), tokenizer_json=tokenizer_json)
    bad_tok = dict(checkpoint, tokenizer={"json": "{not json", "sha256": "0" * 64})
    torch.save(bad_tok, root / "bad_tokenizer.ckpt")
    files["bad_tokenizer"] = root / "bad_tokenizer.ckpt"
    torch.save(dict(checkpoint, model_config={"depth": "two"}), root / "bad_config.ckpt")
    files["bad_config"] = root / "bad_config.ckpt"
    torch.save([1, 2, 3], root / "list.ckpt")
    files["list"] = root / "list.ckpt"
    files["only_empty_last"] = root / "only_empty_last"
    files["only_empty_last"].mkdir()
    (files["only_empty_last"] / "last.ckpt").write_bytes(b"")
    files["a_file"] = root / "a_file.txt"
    files["a_file"].write_text("x")
    # Shards whose ids exceed the vocabulary: another tokenizer's train.bin under this tokenizer.
    big = root / "big_ids"
    shutil.copytree(prepared_dir, big)
    tokens = np.memmap(big / "train.bin", dtype=np.uint16, mode="r+")
    tokens[:1000] = 5000  # same size: meta.json's counts still agree
    tokens.flush()
    del tokens
    meta = json.loads((big / "meta.json").read_text())
    meta.pop("max_token_id", None)  # an older meta.json: the shard is scanned
    (big / "meta.json").write_text(json.dumps(meta))
    files["big_ids"] = big
    held_out = root / "held_out.jsonl"
    held_out.write_text('{"text": "Cleared to land runway 28."}\n')
    files["held_out"] = held_out
    return files


def fit(w, *more):
    return ["fit", "-c", str(w["config"]), *map(str, more)]


def tool(name, *more):
    return [name, *map(str, more)]


# (id, argv from the fixture's files, words the error line must hold)
CASES = [
    # settings, refused before anything is built
    ("negative max_lr", lambda w: fit(w, "--model.init_args.optimizer.max_lr", "-1"), "optimizer.max_lr=-1"),
    ("nan max_lr", lambda w: fit(w, "--model.init_args.optimizer.max_lr", "nan"), "model.init_args.optimizer.max_lr: Expected a <class 'float'>"),
    ("unknown option", lambda w: fit(w, "--trainer.max_stepz", "3"), "unrecognized arguments: --trainer.max_stepz"),
    ("unknown model option", lambda w: fit(w, "--model.init_args.eps", "1e-6"), "model.init_args: Option 'eps' is not accepted"),
    ("max_steps not a number", lambda w: fit(w, "--trainer.max_steps", "abc"), "trainer.max_steps: Expected a <class 'int'>"),
    ("missing config file", lambda w: ["fit", "-c", str(w["root"] / "nope.yaml")], "does not exist"),
    ("min_lr above max_lr", lambda w: fit(w, "--model.init_args.optimizer.min_lr", "0.1"), "at most model.init_args.optimizer.max_lr"),
    ("negative warm-up", lambda w: fit(w, "--model.init_args.optimizer.warmup_steps", "-5"), "warmup_steps=-5"),
    ("warm-up past max_steps", lambda w: fit(w, "--model.init_args.optimizer.warmup_steps", "100"), "below trainer.max_steps=4"),
    ("negative weight decay", lambda w: fit(w, "--model.init_args.optimizer.weight_decay", "-0.1"), "weight_decay=-0.1"),
    ("batch_size 0", lambda w: fit(w, "--data.init_args.batch_size", "0"), "data.init_args.batch_size=0"),
    ("seq_len 0", lambda w: fit(w, "--data.init_args.seq_len", "0"), "data.init_args.seq_len=0"),
    ("num_workers -1", lambda w: fit(w, "--data.init_args.num_workers", "-1"), "data.init_args.num_workers=-1"),
    ("accumulation 0", lambda w: fit(w, "--trainer.accumulate_grad_batches", "0"), "trainer.accumulate_grad_batches=0"),
    ("negative val limit", lambda w: fit(w, "--trainer.limit_val_batches", "-2"), "trainer.limit_val_batches=-2"),
    ("max_steps unset", lambda w: fit(w, "--trainer.max_steps", "-1"), "trainer.max_steps=-1"),
    ("val every 0 steps", lambda w: fit(w, "--val_every_n_steps", "0"), "val_every_n_steps=0"),
    ("negative keep", lambda w: fit(w, "--checkpoint.keep", "-1"), "checkpoint.keep=-1"),
    ("weights_only false", lambda w: fit(w, "--weights_only", "false"), "weights_only=True only"),
    # checkpoints given to fit / validate / test
    ("fit: missing ckpt", lambda w: fit(w, "--ckpt_path", w["root"] / "nope.ckpt"), "does not exist"),
    ("fit: empty ckpt", lambda w: fit(w, "--ckpt_path", w["empty"]), "is empty (0 bytes"),
    ("fit: random ckpt", lambda w: fit(w, "--ckpt_path", w["random"]), "torch.save did not write"),
    ("fit: truncated ckpt", lambda w: fit(w, "--ckpt_path", w["truncated"]), "truncated or damaged"),
    ("fit: code in ckpt", lambda w: fit(w, "--ckpt_path", w["evil"]), "weights_only=True"),
    ("fit: LoRA ckpt to pretraining", lambda w: fit(w, "--ckpt_path", w["lora"]), "LoRA fine-tune"),
    ("fit: a checkpoint without training state", lambda w: fit(w, "--ckpt_path", w["weights_only"]), "holds no training state"),
    ("fit: last all unreadable", lambda w: fit(w, "--ckpt_path", "last", "--checkpoint.dirpath", w["only_empty_last"]), "can be read"),
    ("fit: token ids beyond the vocabulary", lambda w: fit(w, "--data.init_args.data_dir", w["big_ids"]), "token id 5000"),
    ("validate: random ckpt", lambda w: ["validate", "-c", str(w["config"]), "--ckpt_path", str(w["random"])], "torch.save did not write"),
    ("validate: code in ckpt", lambda w: ["validate", "-c", str(w["config"]), "--ckpt_path", str(w["evil"])], "weights_only=True"),
    ("test: code in ckpt", lambda w: ["test", "-c", str(w["config"]), "--ckpt_path", str(w["evil"]), "--data.init_args.test_file", str(w["held_out"])], "weights_only=True"),
    ("test: missing held-out file", lambda w: ["test", "-c", str(w["config"]), "--ckpt_path", str(w["trained"]), "--data.init_args.test_file", str(w["root"] / "nope.jsonl")], "does not exist"),
    # generate
    ("generate: missing ckpt", lambda w: tool("generate", "--ckpt", w["root"] / "nope.ckpt", "--prompt", "x"), "does not exist"),
    ("generate: empty ckpt", lambda w: tool("generate", "--ckpt", w["empty"], "--prompt", "x"), "is empty"),
    ("generate: random ckpt", lambda w: tool("generate", "--ckpt", w["random"], "--prompt", "x"), "torch.save did not write"),
    ("generate: code in ckpt", lambda w: tool("generate", "--ckpt", w["evil"], "--prompt", "x"), "weights_only=True"),
    ("generate: not a dict", lambda w: tool("generate", "--ckpt", w["list"], "--prompt", "x"), "holds a list"),
    ("generate: malformed tokenizer", lambda w: tool("generate", "--ckpt", w["bad_tokenizer"], "--prompt", "x"), "tokenizer it carries cannot be read"),
    ("generate: malformed model_config", lambda w: tool("generate", "--ckpt", w["bad_config"], "--prompt", "x"), "model_config is malformed"),
    ("generate: no --prompt", lambda w: tool("generate", "--ckpt", w["trained"]), "the following arguments are required: --prompt"),
    ("generate: --top-k not a number", lambda w: tool("generate", "--ckpt", w["trained"], "--prompt", "x", "--top-k", "many"), "argument --top-k: invalid int value"),
    ("generate: --device bogus", lambda w: tool("generate", "--ckpt", w["trained"], "--prompt", "x", "--device", "bogus"), "--device bogus"),
    ("generate: --device cuda without CUDA", lambda w: tool("generate", "--ckpt", w["trained"], "--prompt", "x", "--device", "cuda"), "--device cuda"),
    ("generate: --temperature nan", lambda w: tool("generate", "--ckpt", w["trained"], "--prompt", "x", "--temperature", "nan"), "--temperature"),
    ("generate: --top-p 1.5", lambda w: tool("generate", "--ckpt", w["trained"], "--prompt", "x", "--top-p", "1.5"), "--top-p"),
    ("generate: --max-new-tokens 0", lambda w: tool("generate", "--ckpt", w["trained"], "--prompt", "x", "--max-new-tokens", "0"), "--max-new-tokens"),
    # export
    ("export: --out names a file", lambda w: tool("export", "--ckpt", w["trained"], "--out", w["a_file"]), "is a file"),
    ("export: code in ckpt", lambda w: tool("export", "--ckpt", w["evil"], "--out", w["root"] / "exp"), "weights_only=True"),
    ("export: truncated ckpt", lambda w: tool("export", "--ckpt", w["truncated"], "--out", w["root"] / "exp"), "truncated"),
    # synthetic commands
    ("synth-commands: --out names a directory", lambda w: tool("synth-commands", "--n", "5", "--out", w["root"]), "is a directory"),
    ("synth-commands: --n 0", lambda w: tool("synth-commands", "--n", "0", "--out", w["root"] / "c.jsonl"), "--n must be at least 1"),
    # prepare
    ("prepare: missing input", lambda w: tool("prepare", "--input", w["root"] / "nope.jsonl", "--out", w["root"] / "p"), "nope.jsonl"),
    ("prepare: --val-fraction 2", lambda w: tool("prepare", "--input", w["held_out"], "--out", w["root"] / "p", "--val-fraction", "2"), "--val-fraction"),
    # fine-tuning
    ("fine-tune: code in the base", lambda w: ["fit", "-c", "configs/finetune_smoke.yaml", "--model.init_args.base_checkpoint", str(w["evil"])], "weights_only=True"),
    ("fine-tune: missing base", lambda w: ["fit", "-c", "configs/finetune_smoke.yaml", "--model.init_args.base_checkpoint", str(w["root"] / "nope.ckpt")], "does not exist"),
]


@pytest.mark.parametrize("name, argv, words", CASES, ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_clear_line_and_a_nonzero_exit(world, name, argv, words, capfd, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # as some training stacks set it
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    code = main(argv(world))
    out, err = capfd.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("flightmind: error:")]
    assert code == 2, (code, err[-2000:])
    assert len(errors) == 1, err[-2000:]
    assert words in errors[0], errors[0]
    assert "Traceback" not in err and "Traceback" not in out
    assert not world["marker"].exists()  # no pickled code ran


def test_the_table_covers_at_least_30_inputs_across_commands():
    commands = {argv_command(c) for c in CASES}
    assert len(CASES) >= 30 and {"fit", "validate", "test", "generate", "export", "synth-commands", "prepare"} <= commands


def argv_command(case) -> str:
    class Files(dict):
        def __missing__(self, key):
            return Path("/x") / key

    return case[1](Files())[0]

