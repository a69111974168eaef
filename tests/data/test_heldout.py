import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from flightmind.model import GPTConfig
from flightmind.data.datamodule import PretrainDataModule
from flightmind.data.heldout import HeldOutDocuments
from flightmind.data.prepare import encode_documents
from flightmind.contracts import eot_id, load_tokenizer
from flightmind.errors import FlightMindError
from flightmind.training.pretrain import PretrainModule

SEQ_LEN = 32
TEXTS = [
    "METAR KJFK 121651Z 31015G25KT 10SM FEW250 M02/M18 A3012",
    "Wind shear on final — go around, maximum thrust, pitch 15°.",  # non-ASCII: bytes > characters
    " ".join(["The pilot completed the preflight inspection before taxiing to runway 27."] * 8),  # > SEQ_LEN tokens
]


def write_jsonl(path, texts):
    import json

    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def run_test(prepared_dir, test_file, batch_size=2):
    torch.manual_seed(0)
    module = PretrainModule(shape=GPTConfig(depth=2, vocab_size=1024, max_seq_len=64))
    module.configure_model()
    data = PretrainDataModule(data_dir=str(prepared_dir), seq_len=SEQ_LEN, batch_size=batch_size, test_file=str(test_file))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.test(module, datamodule=data, verbose=False)
    return module, metrics


def hand_computation(model, tokenizer, texts):
    """Each document after <|endoftext|>, its tokens in consecutive windows of SEQ_LEN targets."""
    eot = eot_id(tokenizer)
    nats, tokens, n_bytes = 0.0, 0, 0
    with torch.no_grad():
        for text in texts:
            ids = tokenizer.encode(text, add_special_tokens=False).ids
            sequence = torch.tensor([eot, *ids])
            for start in range(0, len(ids), SEQ_LEN):
                window = sequence[start : start + SEQ_LEN + 1]
                logits = model(window[None, :-1])[0]
                nats += float(F.cross_entropy(logits, window[1:], reduction="sum"))
            tokens += len(ids)
            n_bytes += len(text.encode("utf-8"))
    return nats, tokens, n_bytes


def test_jsonl_scores_every_token_once_and_matches_a_hand_computation(prepared_dir, tmp_path):
    tokenizer = load_tokenizer(prepared_dir / "tokenizer.json")
    assert len(tokenizer.encode(TEXTS[2]).ids) > 2 * SEQ_LEN  # the long document spans three windows
    module, metrics = run_test(prepared_dir, write_jsonl(tmp_path / "held_out.jsonl", TEXTS))
    nats, tokens, n_bytes = hand_computation(module.model, tokenizer, TEXTS)
    assert metrics["test/tokens"] == tokens
    assert metrics["test/documents"] == len(TEXTS)
    assert metrics["test/loss"] == pytest.approx(nats / tokens, rel=1e-5)
    assert metrics["test/ppl"] == pytest.approx(math.exp(nats / tokens), rel=1e-5)
    assert n_bytes > sum(len(t) for t in TEXTS)  # UTF-8 bytes, not characters
    assert metrics["test/bits_per_byte"] == pytest.approx(nats / (math.log(2) * n_bytes), rel=1e-5)


def test_a_packed_bin_gives_the_same_numbers_as_its_jsonl(prepared_dir, tmp_path):
    tokenizer = load_tokenizer(prepared_dir / "tokenizer.json")
    shard = tmp_path / "held_out.bin"
    encode_documents(tokenizer, TEXTS, eot_id(tokenizer)).tofile(shard)
    _, from_bin = run_test(prepared_dir, shard, batch_size=3)
    _, from_jsonl = run_test(prepared_dir, write_jsonl(tmp_path / "held_out.jsonl", TEXTS))
    assert from_bin["test/tokens"] == from_jsonl["test/tokens"]
    assert from_bin["test/documents"] == len(TEXTS)
    for key in ("test/loss", "test/bits_per_byte"):
        assert from_bin[key] == pytest.approx(from_jsonl[key], rel=1e-5)


def test_windows_cover_each_document_once(prepared_dir, tmp_path):
    tokenizer = load_tokenizer(prepared_dir / "tokenizer.json")
    dataset = HeldOutDocuments(write_jsonl(tmp_path / "h.jsonl", TEXTS), tokenizer, SEQ_LEN)
    targets = sum(len(tokens) - 1 for tokens, _, _ in dataset.windows)
    assert targets == dataset.num_tokens == sum(len(tokenizer.encode(t).ids) for t in TEXTS)
    assert all(len(tokens) - 1 <= SEQ_LEN for tokens, _, _ in dataset.windows)
    assert sum(first for _, _, first in dataset.windows) == 3


def test_bad_held_out_line_is_skipped_and_counted_or_under_strict_names_file_and_line(prepared_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "no text key"}\n')
    tokenizer = load_tokenizer(prepared_dir / "tokenizer.json")
    with pytest.warns(UserWarning, match=r"skipped 1 bad line\(s\) \(missing_key 1\)"):
        assert HeldOutDocuments(bad, tokenizer, SEQ_LEN).num_documents == 1
    with pytest.raises(FlightMindError, match=f"{bad}:2: .*set data.init_args.test_strict: false"):
        HeldOutDocuments(bad, tokenizer, SEQ_LEN, strict=True)
