import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from flightmind.data.documents import iter_documents
from flightmind.contracts import EOT, SPECIAL_TOKENS, eot_id, load_tokenizer, tokenizer_hash
from flightmind.data.tokenizer import check_vocab_size, save_tokenizer, train_tokenizer
from flightmind.errors import FlightMindError

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
NTSB = SHARED_DATA / "aviation" / "ntsb_probable_cause.jsonl"


@pytest.fixture(scope="module")
def ntsb_texts() -> list[str]:
    if not NTSB.is_file():
        pytest.skip(f"real aviation text not found at {NTSB} (../shared/data is absent in a fresh clone)")
    return [doc.text for doc in iter_documents(NTSB)]


@pytest.fixture(scope="module")
def tokenizer(ntsb_texts) -> Tokenizer:
    return train_tokenizer(iter(ntsb_texts), vocab_size=600)


def test_special_tokens_take_ids_0_to_4(tokenizer):
    assert [tokenizer.token_to_id(token) for token in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert eot_id(tokenizer) == 0
    assert tokenizer.get_vocab_size() == 600


@pytest.mark.parametrize("special", SPECIAL_TOKENS)
def test_special_token_is_one_id_inside_text(tokenizer, special):
    before, after = "RWY 27 cleared to land", "wind 270 at 12"
    ids = tokenizer.encode(before + special + after).ids
    assert ids == tokenizer.encode(before).ids + [SPECIAL_TOKENS.index(special)] + tokenizer.encode(after).ids


def test_round_trip_is_exact_on_real_aviation_text(tokenizer, ntsb_texts):
    with_curly_quote = [text for text in ntsb_texts if "’" in text]
    assert len(with_curly_quote) > 10  # the NTSB records really exercise non-ASCII text
    extra = [
        "METAR KSFO 121756Z 28015G25KT 10SM FEW008 18/12 A2992\r\n\tRMK AO2",
        "Ünïcödé ✈ 滑走路 \u00a0nbsp  double  spaces ",
        f"pilot’s report{EOT}next document<|user|>",
    ]
    for text in ntsb_texts + extra:
        ids = tokenizer.encode(text).ids
        assert tokenizer.decode(ids, skip_special_tokens=False) == text


def test_training_streams_from_a_generator(ntsb_texts):
    consumed = []

    def texts():
        for text in ntsb_texts[:50]:
            consumed.append(text)
            yield text

    tokenizer = train_tokenizer(texts(), vocab_size=300)
    assert len(consumed) == 50
    assert tokenizer.get_vocab_size() == 300


def test_vocab_that_does_not_fit_uint16_is_refused_with_its_size():
    with pytest.raises(FlightMindError, match="70,000"):
        check_vocab_size(70_000)
    with pytest.raises(FlightMindError, match="65,537"):
        train_tokenizer(["never trained"], vocab_size=65_537)
    check_vocab_size(65_536)
    check_vocab_size(32_768)
    with pytest.raises(FlightMindError, match="at least 261"):
        check_vocab_size(100)


def test_hash_is_stable_across_save_and_load(tokenizer, ntsb_texts, tmp_path):
    path = tmp_path / "tokenizer.json"
    save_tokenizer(tokenizer, path)
    assert list(tmp_path.iterdir()) == [path]  # the temporary file was renamed into place
    reloaded = load_tokenizer(path)
    assert tokenizer_hash(reloaded) == tokenizer_hash(tokenizer)
    assert len(tokenizer_hash(tokenizer)) == 64
    assert reloaded.encode(ntsb_texts[0]).ids == tokenizer.encode(ntsb_texts[0]).ids
    reformatted = tmp_path / "reformatted.json"
    reformatted.write_text(json.dumps(json.loads(path.read_text()), sort_keys=True, indent=1))
    assert tokenizer_hash(load_tokenizer(reformatted)) == tokenizer_hash(tokenizer)
    other = train_tokenizer(iter(ntsb_texts), vocab_size=599)
    assert tokenizer_hash(other) != tokenizer_hash(tokenizer)


def test_load_names_a_missing_or_unreadable_file(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(FlightMindError, match="nope.json does not exist"):
        load_tokenizer(missing)
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not a tokenizer")
    with pytest.raises(FlightMindError, match="cannot read tokenizer .*garbage.json"):
        load_tokenizer(garbage)


def test_load_refuses_a_tokenizer_without_the_special_tokens(tmp_path, ntsb_texts):
    plain = Tokenizer(models.BPE())
    plain.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False)
    plain.train_from_iterator(ntsb_texts[:20], trainer=trainer)
    path = tmp_path / "plain.json"
    plain.save(str(path))
    with pytest.raises(FlightMindError, match=r"plain.json lacks the special token <\|system\|>"):
        load_tokenizer(path)
