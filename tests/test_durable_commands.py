"""The smaller durability points, through the commands users type: another tokenizer's data refused on
resume, `test` without a checkpoint said loudly, held-out documents read as `prepare` reads them,
`prepare`'s temporary files (exclusive, removed on SIGTERM) and its validation-size warning, exported files 0644."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from flightmind.cli import main
from tests.helpers import REPO
from tests.training.tiny import tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(prepared_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("durable_commands")
    config = tiny_config(root / "tiny.yaml", prepared_dir, root / "ckpts", max_steps=4, every=2)
    assert main(["fit", "-c", str(config)]) == 0
    return config, root / "ckpts" / "final.ckpt", root


def errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("flightmind: error:")]


def test_resuming_on_data_of_another_tokenizer_is_refused_naming_both_hashes_and_paths(trained, prepared_dir, tmp_path, capfd):
    from flightmind.data.prepare import prepare

    config, ckpt, _ = trained
    other = tmp_path / "other"
    corpus = prepared_dir.parent / "corpus"
    prepare(sorted((corpus / "aviation").glob("*.jsonl")), other, vocab_size=1024, val_fraction=0.05, workers=1, progress=False)
    ours = json.loads((prepared_dir / "meta.json").read_text())["tokenizer_sha256"]
    theirs = json.loads((other / "meta.json").read_text())["tokenizer_sha256"]
    assert ours != theirs
    code = main(["fit", "-c", str(config), "--ckpt_path", str(ckpt), "--data.init_args.data_dir", str(other),
                 "--checkpoint.dirpath", str(tmp_path / "ck"), "--trainer.max_steps", "6"])
    lines = errors(capfd.readouterr().err)
    assert code == 2 and len(lines) == 1
    for words in (str(ckpt), ours[:12], str(other / "tokenizer.json"), theirs[:12]):
        assert words in lines[0], lines[0]
    assert not (tmp_path / "ck").exists()  # nothing trained, nothing saved


def test_test_without_ckpt_path_says_loudly_that_the_model_was_never_trained(trained, tmp_path, capfd):
    config, _, _ = trained
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text('{"text": "Cleared to land runway 28."}\n')
    with pytest.warns(UserWarning, match=r"NO CHECKPOINT: `flightmind test` without --ckpt_path .* never trained"):
        assert main(["test", "-c", str(config), "--data.init_args.test_file", str(held_out)]) == 0


def test_held_out_bad_lines_are_skipped_and_counted_and_test_strict_names_file_and_line(trained, tmp_path, capfd):
    config, ckpt, _ = trained
    held_out = tmp_path / "held_out.jsonl"
    # A real NTSB record holds U+001E; a line that is no JSON; two good documents.
    held_out.write_text(
        '{"text": "Cleared to land runway 28."}\n{"text": "record\\u001eseparator"}\nnot json\n{"text": "Wind 270 at 12."}\n'
    )
    with pytest.warns(UserWarning, match=r"skipped 2 bad line\(s\) \(not_json 1, control_chars 1\)"):
        assert main(["test", "-c", str(config), "--ckpt_path", str(ckpt), "--data.init_args.test_file", str(held_out)]) == 0
    assert re.search(r"test/documents\s*│\s*2\.0\b", capfd.readouterr().out)  # the two good documents
    code = main(["test", "-c", str(config), "--ckpt_path", str(ckpt), "--data.init_args.test_file", str(held_out),
                 "--data.init_args.test_strict", "true"])
    lines = errors(capfd.readouterr().err)
    assert code == 2 and len(lines) == 1
    assert f"{held_out}:2:" in lines[0] and "U+001E" in lines[0] and "test_strict: false" in lines[0]
    assert "--strict" not in lines[0]


def test_prepare_never_writes_through_a_link_planted_at_a_temporary_name(prepared_dir, tmp_path):
    from flightmind.data.prepare import prepare

    out, victim = tmp_path / "out", tmp_path / "victim.txt"
    out.mkdir()
    victim.write_text("keep me")
    for name in ("train.bin.tmp", "val.bin.tmp", "meta.json.tmp", "tokenizer.json.tmp", ".train.bin.x.fmtmp"):
        (out / name).symlink_to(victim)
    corpus = prepared_dir.parent / "corpus" / "aviation"
    prepare(sorted(corpus.glob("*.jsonl"))[:2], out, vocab_size=512, val_fraction=0.05, workers=1, progress=False)
    assert victim.read_text() == "keep me"
    assert (out / "meta.json").is_file() and not list(out.glob("*.fmtmp"))


def test_sigterm_during_prepare_removes_its_temporary_files_and_exits_143(prepared_dir, tmp_path):
    big = tmp_path / "big.jsonl"
    lines = [json.dumps({"text": f"document {i}: " + "the quick brown fox jumps over the lazy dog " * 40}) for i in range(20_000)]
    big.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    child = subprocess.Popen(
        [sys.executable, "-m", "flightmind.cli", "prepare", "--input", str(big), "--out", str(out),
         "--tokenizer", str(prepared_dir / "tokenizer.json"), "--workers", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while not list(out.glob(".*.fmtmp")) and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    assert list(out.glob(".*.fmtmp")), "prepare finished before it could be interrupted"
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 143 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("interrupted; temporary files removed")
    assert list(out.iterdir()) == []


def test_prepare_warns_when_the_validation_split_is_smaller_than_a_batch_of_the_shipped_configs(prepared_dir, tmp_path, capfd):
    corpus = prepared_dir.parent / "corpus" / "aviation"
    out = tmp_path / "out"
    assert main(["prepare", "--input", *map(str, sorted(corpus.glob("*.jsonl"))[:2]), "--out", str(out),
                 "--tokenizer", str(prepared_dir / "tokenizer.json"), "--val-fraction", "0.02", "--workers", "1"]) == 0
    warnings = [line for line in capfd.readouterr().err.splitlines() if line.startswith("flightmind: warning:")]
    val_tokens = json.loads((out / "meta.json").read_text())["val"]["tokens"]
    assert val_tokens < 8 * 257  # smaller than smoke.yaml's batch of 8 × 257 tokens, so every shipped config warns
    assert len(warnings) == 3 and all(f"val.bin holds {val_tokens:,} tokens" in w for w in warnings)
    assert "configs/smoke.yaml (8 sequences × 257 tokens = 2,056)" in warnings[0]


def test_exported_files_are_all_0644(trained, tmp_path):
    _, ckpt, _ = trained
    out = tmp_path / "exported"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(out)]) == 0
    mask = os.umask(0)
    os.umask(mask)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(modes)  # the Hugging Face layout
    assert set(modes.values()) == {oct(0o666 & ~mask)}
    flightmind_format = tmp_path / "flightmind_format"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(flightmind_format), "--format", "flightmind"]) == 0
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in flightmind_format.iterdir()} == {
        name: oct(0o666 & ~mask) for name in ("model.safetensors", "config.json", "tokenizer.json")
    }
