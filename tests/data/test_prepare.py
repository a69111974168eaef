import argparse
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

import flightmind.data.prepare as prepare_module
from flightmind.data.documents import iter_documents
from flightmind.data.prepare import add_arguments, main, prepare, run
from flightmind.contracts import open_shard, read_meta
from flightmind.data.tokenizer import save_tokenizer, train_tokenizer
from flightmind.contracts import load_tokenizer, tokenizer_hash
from flightmind.errors import FlightMindError

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

WORDS = "METAR KSFO 28015G25KT 10SM FEW008 pilot’s runway 27L cleared to land ÜBERLINGEN ✈ wind shear on final \n \t".split(" ")
# Lines of a.jsonl that are not documents, with the reason each is skipped.
BAD_LINES = {
    5: (b"{\"text\": \"truncated\n", "not_json"),
    9: (b"{\"text\": \"\xc3\x28 broken utf-8\"}\n", "invalid_utf8"),
    17: (b"{\"text\": \"   \"}\n", "empty"),
    30: (b"{\"text\": \"NUL \\u0000 inside\"}\n", "control_chars"),
    31: (b"{\"id\": 31}\n", "missing_key"),
}
BLANK_LINE = 40


def synthetic_documents(count: int) -> list[str]:
    rng = random.Random(0)
    return [f"doc {i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 80))) for i in range(count)]


def document_index(text: str) -> int:
    return int(text.split(":", 1)[0].removeprefix("doc "))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """a.jsonl (documents 0..199 with bad and blank lines between them) and b.jsonl (200..349)."""
    directory = tmp_path_factory.mktemp("corpus")
    docs = synthetic_documents(350)
    lines, remaining = [], iter(docs[:200])
    while len(lines) < 200 + len(BAD_LINES) + 1:
        line_no = len(lines) + 1
        if line_no in BAD_LINES:
            lines.append(BAD_LINES[line_no][0])
        elif line_no == BLANK_LINE:
            lines.append(b"\n")
        else:
            lines.append(json.dumps({"id": line_no, "text": next(remaining)}).encode() + b"\n")
    (directory / "a.jsonl").write_bytes(b"".join(lines))
    (directory / "b.jsonl").write_bytes(b"".join(json.dumps({"text": doc}).encode() + b"\n" for doc in docs[200:]))
    tokenizer_path = directory / "given_tokenizer.json"
    save_tokenizer(train_tokenizer(docs, vocab_size=400), tokenizer_path)
    return {"inputs": [directory / "a.jsonl", directory / "b.jsonl"], "docs": docs, "tokenizer": tokenizer_path}


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
    """One full run that trains its own tokenizer."""
    out = tmp_path_factory.mktemp("prepared")
    meta = prepare(corpus["inputs"], out, vocab_size=400, val_fraction=0.2, workers=2, progress=False)
    return out, meta


def decode_shard(out: Path, split: str) -> list[str]:
    tokenizer = load_tokenizer(out / "tokenizer.json")
    tokens = np.fromfile(out / f"{split}.bin", dtype=np.uint16)
    ends = np.flatnonzero(tokens == 0)
    assert len(tokens) == 0 or ends[-1] == len(tokens) - 1  # every document is closed by <|endoftext|>
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tokenizer.decode(tokens[start:end].tolist(), skip_special_tokens=False) for start, end in zip(starts, ends)]


def output_files(out: Path) -> list[str]:
    return sorted(path.name for path in out.iterdir())


def test_round_trip_gives_back_every_document_in_order(prepared, corpus):
    out, meta = prepared
    train, val = decode_shard(out, "train"), decode_shard(out, "val")
    assert set(train).isdisjoint(val)
    assert sorted(train + val, key=document_index) == corpus["docs"]
    for split_docs in (train, val):
        indices = [document_index(text) for text in split_docs]
        assert indices == sorted(indices)
    assert meta["train"]["documents"] == len(train)
    assert meta["val"]["documents"] == len(val)
    assert 0.12 * 350 < len(val) < 0.28 * 350  # whole documents, about val_fraction of them
    assert output_files(out) == ["meta.json", "tokenizer.json", "train.bin", "val.bin"]


def test_meta_counts_match_the_shards(prepared, corpus):
    out, meta = prepared
    assert read_meta(out) == meta
    for split in ("train", "val"):
        assert meta[split]["tokens"] == (out / f"{split}.bin").stat().st_size // 2
        assert meta[split]["tokens"] == len(open_shard(out, split))
        assert meta[split]["tokens"] == sum(file[split]["tokens"] for file in meta["files"].values())
        assert meta[split]["documents"] == sum(file[split]["documents"] for file in meta["files"].values())
        assert meta[split]["documents"] == int(np.count_nonzero(open_shard(out, split) == meta["eot_id"]))
    assert meta["total_tokens"] == meta["train"]["tokens"] + meta["val"]["tokens"]
    a, b = (str(path) for path in corpus["inputs"])
    assert meta["files"][a]["train"]["documents"] + meta["files"][a]["val"]["documents"] == 200
    assert meta["files"][b]["train"]["documents"] + meta["files"][b]["val"]["documents"] == 150
    assert meta["vocab_size"] == 400
    assert meta["dtype"] == "uint16"
    assert meta["eot_id"] == 0
    assert meta["tokenizer_sha256"] == tokenizer_hash(load_tokenizer(out / "tokenizer.json"))
    assert meta["seed"] == 1337
    assert meta["demo"] is False
    assert meta["arguments"] == {
        "inputs": [a, b],
        "out": str(out),
        "tokenizer": None,
        "vocab_size": 400,
        "val_fraction": 0.2,
        "text_key": "text",
        "workers": 2,
        "strict": False,
        "seed": 1337,
    }


def test_bad_lines_are_counted_per_file_and_reason(prepared, corpus):
    _, meta = prepared
    a, b = (str(path) for path in corpus["inputs"])
    expected = {"not_json": 1, "missing_key": 1, "not_string": 0, "invalid_utf8": 1, "control_chars": 1, "empty": 1}
    assert meta["files"][a]["skipped_lines"] == expected
    assert meta["files"][b]["skipped_lines"] == dict.fromkeys(expected, 0)
    assert meta["skipped_lines"] == expected


def test_split_depends_on_the_seed_not_on_the_workers(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(prepare_module, "BLOCK_BYTES", 2048)  # many blocks, so that workers interleave
    outputs = {}
    for name, workers, seed in [("one", 1, 5), ("two", 2, 5), ("other_seed", 2, 6)]:
        prepare(corpus["inputs"], tmp_path / name, tokenizer=corpus["tokenizer"], val_fraction=0.2, workers=workers, seed=seed, progress=False)
        outputs[name] = {split: (tmp_path / name / f"{split}.bin").read_bytes() for split in ("train", "val")}
    assert outputs["one"] == outputs["two"]
    assert outputs["one"]["val"] != outputs["other_seed"]["val"]
    assert (tmp_path / "one" / "tokenizer.json").read_bytes() == corpus["tokenizer"].read_bytes()


def interrupt_after_blocks(monkeypatch, blocks: int) -> None:
    original = prepare_module.read_blocks

    def read_then_interrupt(path):
        for n, block in enumerate(original(path)):
            if n == blocks:
                raise KeyboardInterrupt
            yield block

    monkeypatch.setattr(prepare_module, "BLOCK_BYTES", 1024)
    monkeypatch.setattr(prepare_module, "read_blocks", read_then_interrupt)


def test_interrupted_run_leaves_no_shard(corpus, tmp_path, monkeypatch):
    interrupt_after_blocks(monkeypatch, blocks=3)
    with pytest.raises(KeyboardInterrupt):
        prepare(corpus["inputs"], tmp_path / "out", tokenizer=corpus["tokenizer"], workers=2, progress=False)
    assert output_files(tmp_path / "out") == []


def test_failed_runs_keep_the_previous_complete_outputs(prepared, corpus, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(prepared[0], out)
    before = {name: (out / name).read_bytes() for name in output_files(out)}

    # Each fails after all new shards were written, or halfway through writing them.
    with pytest.raises(FlightMindError, match="validation split is empty"):
        prepare(corpus["inputs"], out, tokenizer=corpus["tokenizer"], val_fraction=1e-9, workers=1, progress=False)
    with pytest.raises(ValueError, match="vocab_size"):
        prepare(corpus["inputs"], out, tokenizer=corpus["tokenizer"], extra_meta={"vocab_size": 1}, workers=1, progress=False)
    interrupt_after_blocks(monkeypatch, blocks=2)
    with pytest.raises(KeyboardInterrupt):
        prepare(corpus["inputs"], out, tokenizer=corpus["tokenizer"], seed=9, workers=2, progress=False)

    assert {name: (out / name).read_bytes() for name in output_files(out)} == before
    assert read_meta(out) == prepared[1]


def test_strict_stops_at_the_first_bad_line(corpus, tmp_path):
    a = corpus["inputs"][0]
    with pytest.raises(FlightMindError, match=rf"^{a}:5: not valid JSON .*without --strict"):
        prepare(corpus["inputs"], tmp_path / "out", tokenizer=corpus["tokenizer"], strict=True, workers=2, progress=False)
    assert output_files(tmp_path / "out") == []


def test_empty_validation_split_is_an_error(corpus, tmp_path):
    with pytest.raises(FlightMindError, match="validation split is empty: none of the 350 documents"):
        prepare(corpus["inputs"], tmp_path / "out", tokenizer=corpus["tokenizer"], val_fraction=1e-9, workers=1, progress=False)
    assert output_files(tmp_path / "out") == []


def test_no_valid_documents_names_the_skip_reasons(corpus, tmp_path):
    with pytest.raises(FlightMindError, match=r"no valid documents .*b.jsonl: missing_key 150.*--text-key"):
        prepare(corpus["inputs"], tmp_path / "out", tokenizer=corpus["tokenizer"], text_key="body", workers=1, progress=False)


def test_vocab_too_large_for_uint16_is_refused(corpus, tmp_path):
    with pytest.raises(FlightMindError, match="70,000 does not fit uint16"):
        prepare(corpus["inputs"], tmp_path / "out", vocab_size=70_000, progress=False)


def test_extra_meta_is_merged_and_val_fraction_zero_gives_an_empty_val_shard(corpus, tmp_path):
    out = tmp_path / "out"
    meta = prepare(
        corpus["inputs"], out, tokenizer=corpus["tokenizer"], val_fraction=0.0, workers=1,
        extra_meta={"demo": True, "demo_generator": "synthetic"}, progress=False,
    )
    assert meta["demo"] is True and meta["demo_generator"] == "synthetic"
    assert json.loads((out / "meta.json").read_text()) == meta
    assert meta["val"] == {"documents": 0, "tokens": 0}
    assert meta["train"]["documents"] == 350
    assert len(open_shard(out, "val")) == 0


def test_cli_run_prints_a_summary_and_returns_0(corpus, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "out"
    args = parser.parse_args(
        ["--input", *map(str, corpus["inputs"]), "--out", str(out), "--tokenizer", str(corpus["tokenizer"]),
         "--val-fraction", "0.1", "--workers", "2", "--seed", "3"]
    )
    assert run(args) == 0
    meta = read_meta(out)
    printed = capsys.readouterr().out
    assert f"train: {meta['train']['documents']:>10,} documents {meta['train']['tokens']:>14,} tokens" in printed
    assert f"val:   {meta['val']['documents']:>10,} documents {meta['val']['tokens']:>14,} tokens" in printed
    assert f"{corpus['inputs'][0]}: not_json 1, missing_key 1, invalid_utf8 1, control_chars 1, empty 1" in printed
    assert meta["arguments"]["seed"] == 3 and meta["arguments"]["tokenizer"] == str(corpus["tokenizer"])


def test_main_reports_user_errors_without_a_traceback(tmp_path, capsys):
    assert main(["--input", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "out")]) == 2
    printed = capsys.readouterr().err
    assert f"error: input file {tmp_path / 'missing.jsonl'} does not exist" in printed
    assert "Traceback" not in printed


def test_read_meta_refuses_a_directory_that_is_not_complete(prepared, tmp_path):
    with pytest.raises(FlightMindError, match=r"has no meta.json: run `flightmind prepare"):
        read_meta(tmp_path)
    out = tmp_path / "copy"
    shutil.copytree(prepared[0], out)
    with open(out / "train.bin", "r+b") as shard:
        shard.truncate(100)
    with pytest.raises(FlightMindError, match=r"train.bin has 100 bytes but .*meta.json says"):
        read_meta(out)


def test_real_corpus_round_trip(tmp_path, corpus):
    inputs = sorted(SHARED_DATA.glob("*/*.jsonl"))
    if not inputs:
        pytest.skip(f"real corpus not found at {SHARED_DATA} (../shared/data is absent in a fresh clone)")
    meta = prepare(inputs, tmp_path / "out", tokenizer=corpus["tokenizer"], val_fraction=0.0, workers=2, progress=False)
    expected = [doc.text for path in inputs for doc in iter_documents(path)]
    assert decode_shard(tmp_path / "out", "train") == expected
    nws = str(SHARED_DATA / "aviation" / "nws_weather_products.jsonl")
    assert meta["files"][nws]["skipped_lines"]["control_chars"] == 1
    assert meta["skipped_lines"]["control_chars"] == 1 and sum(meta["skipped_lines"].values()) == 1


def test_ctrl_c_in_flightmind_prepare_is_one_line_not_a_traceback(monkeypatch, tmp_path, capsys):
    import flightmind.data.prepare as module
    from flightmind.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "prepare", interrupted)
    assert main(["prepare", "--input", "a.jsonl", "--out", str(tmp_path / "out")]) == 130
    assert capsys.readouterr().err == f"interrupted; temporary files removed: rerun to prepare {tmp_path / 'out'}\n"


def test_a_sigterm_while_the_workers_fork_is_recorded_and_raised_right_after():
    """Python may run the handler inside fork's after-fork hooks, which swallow its exception (seen in
    CI: prepare ran to the end after SIGTERM): while forking, the signal is only recorded."""
    import os
    import signal
    import time

    from flightmind.data.prepare import _forking, _raise_terminated, _Terminated

    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    reached_the_end_of_the_block = False
    try:
        with pytest.raises(_Terminated):
            with _forking():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # the handler has run by now: it must not have raised here
                reached_the_end_of_the_block = True
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert reached_the_end_of_the_block
    assert signal.getsignal(signal.SIGTERM) is previous
