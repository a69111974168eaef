"""Export to the Hugging Face Llama format: transformers computes what FlightMind computes."""

import json
import os
import stat

import pytest
import torch

transformers = pytest.importorskip("transformers")

from flightmind.contracts import load_tokenizer  # noqa: E402
from flightmind.data.chat import DEFAULT_SYSTEM_PROMPT, ChatTemplate, Message  # noqa: E402
from flightmind.export import export  # noqa: E402
from flightmind.model.checkpoint import build_model, load_trained, read_checkpoint  # noqa: E402
from flightmind.generate import chat_prompt  # noqa: E402
from flightmind.model.generate import encode_prompt, generate  # noqa: E402
from tests.helpers import LORA, fine_tuned  # noqa: E402
from tests.interop.helpers import SHAPES, gpt_checkpoint, random_gpt  # noqa: E402

TEXT = "Cleared for takeoff runway two seven, climb and maintain four thousand, contact departure 124.35."


def hf_model(directory):
    return transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()


@pytest.mark.parametrize("shape", list(SHAPES))
def test_smoke_model_gives_the_same_logits_and_greedy_tokens_in_transformers(tmp_path, chat_tokenizer_path, shape):
    model = random_gpt(SHAPES[shape])
    ckpt = gpt_checkpoint(tmp_path / "m.ckpt", model, chat_tokenizer_path)
    summary = export(ckpt, tmp_path / "hf")
    assert summary["format"] == "hf" and "model.safetensors" in summary["files"]
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["rms_norm_eps"] == 1e-5
    assert config["tie_word_embeddings"] is model.config.tie_embeddings and config["head_dim"] == model.config.head_size
    assert config["bos_token_id"] == 0 and config["vocab_size"] == model.config.vocab_size

    hf = hf_model(tmp_path / "hf")
    assert type(hf).__name__ == "LlamaForCausalLM" and hf.config.num_key_value_heads == model.config.n_kv_head
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    fm_tokenizer = load_tokenizer(chat_tokenizer_path)
    inputs = tokenizer(TEXT, return_tensors="pt")
    assert inputs["input_ids"][0].tolist() == encode_prompt(fm_tokenizer, TEXT)  # <|endoftext|> first, as FlightMind
    with torch.no_grad():
        ours, theirs = model(inputs["input_ids"]), hf(**inputs).logits
    assert (ours - theirs).abs().max() <= 1e-4

    prompt = inputs["input_ids"][0].tolist()
    expected = list(generate(model, prompt, 32, temperature=0.0))
    produced = hf.generate(**inputs, max_new_tokens=32, do_sample=False)[0, len(prompt) :].tolist()
    assert len(expected) == 32 and produced == expected


def test_autotokenizer_encodes_aviation_text_as_flightmind_does(tmp_path, prepared_dir):
    from flightmind.demo.corpus import build_demo_corpus
    from flightmind.data.documents import iter_documents

    fm_tokenizer = load_tokenizer(prepared_dir / "tokenizer.json")
    model = random_gpt(dict(depth=2, vocab_size=1024, max_seq_len=64))
    export(gpt_checkpoint(tmp_path / "m.ckpt", model, prepared_dir / "tokenizer.json"), tmp_path / "hf")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    corpus = build_demo_corpus(tmp_path / "corpus", aviation_docs=40, general_docs=0)
    texts = [doc.text for path in corpus["aviation"] for doc in iter_documents(path)][:40]
    texts += ["METAR KJFK 121851Z 31015G25KT 10SM FEW050 BKN250 M02/M18 A3012", "ÉCHO — 滑走路 ✈ \t tabs\nnew lines  "]
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        assert ids == encode_prompt(fm_tokenizer, text)
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer.bos_token_id == tokenizer.eos_token_id == tokenizer.pad_token_id == 0
    assert tokenizer.convert_tokens_to_ids(["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]) == [1, 2, 3, 4]


def test_chat_template_renders_flightmind_chats_token_for_token(tmp_path, chat_tokenizer_path):
    fm_tokenizer = load_tokenizer(chat_tokenizer_path)
    export(gpt_checkpoint(tmp_path / "m.ckpt", random_gpt(SHAPES["tied"]), chat_tokenizer_path), tmp_path / "hf")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    template = ChatTemplate(fm_tokenizer)

    def render(messages, **kwargs):
        dicts = [{"role": m.role, "content": m.content} for m in messages]
        return tokenizer.apply_chat_template(dicts, tokenize=True, return_dict=True, **kwargs)["input_ids"]

    chat = [
        Message("system", "You are FlightMind, an aviation AI copilot for AIDA."),
        Message("user", "descend and maintain flight level one two zero"),
        Message("assistant", '{"action": "altitude", "value": 12000}\nRoger, descending to FL120.'),
        Message("user", "set squawk seven seven zero zero"),
    ]
    assert render(chat[:3]) == template.encode(chat[:3])[0]  # whole conversations, as fine-tuning sees them
    assert render(chat, add_generation_prompt=True) == template.prompt(chat)
    assert render(chat[:3], add_generation_prompt=False) == template.encode(chat[:3])[0]
    # No system turn: the default one comes first, as `flightmind generate --chat` puts it.
    assert render(chat[1:2], add_generation_prompt=True) == chat_prompt(fm_tokenizer, chat[1].content, DEFAULT_SYSTEM_PROMPT)
    with pytest.raises(Exception, match="system, user and assistant"):
        render([Message("tool", "x")])


def test_merged_lora_model_round_trips(tmp_path, chat_tokenizer_path):
    model = fine_tuned()
    ckpt = gpt_checkpoint(tmp_path / "lora.ckpt", model, chat_tokenizer_path, lora=LORA)
    summary = export(ckpt, tmp_path / "hf")
    assert summary["source"]["lora_merged"] == LORA
    hf = hf_model(tmp_path / "hf")
    idx = torch.randint(0, 512, (2, 48), generator=torch.Generator().manual_seed(0))
    unmerged = build_model(read_checkpoint(ckpt), merge=False).eval()
    with torch.no_grad():
        assert (hf(idx).logits - unmerged(idx)).abs().max() <= 1e-4
    # The export reads back into FlightMind (generate, fine-tuning) with the original tokenizer.
    loaded, tokenizer = load_trained(tmp_path / "hf")
    assert tokenizer.to_str() == load_tokenizer(chat_tokenizer_path).to_str()
    with torch.no_grad():
        assert (loaded(idx) - unmerged(idx)).abs().max() <= 1e-5


def test_large_models_are_sharded_with_an_index(tmp_path, chat_tokenizer_path):
    from flightmind.interop.hf import write_hf

    model = random_gpt(SHAPES["gqa_untied"])
    tokenizer = load_tokenizer(chat_tokenizer_path)
    files = write_hf(model.state_dict(), model.config, tokenizer, tmp_path / "hf", system_prompt="s", max_shard_bytes=200_000)
    shards = [f for f in files if f.startswith("model-")]
    assert len(shards) > 2 and "model.safetensors.index.json" in files and "model.safetensors" not in files
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards) and len(index["weight_map"]) == len(model.state_dict())
    idx = torch.randint(0, 512, (1, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (hf_model(tmp_path / "hf")(idx).logits - model(idx)).abs().max() <= 1e-4
    # Exporting again unsharded leaves no stale shards behind.
    write_hf(model.state_dict(), model.config, tokenizer, tmp_path / "hf", system_prompt="s")
    assert not list((tmp_path / "hf").glob("model-*")) and not (tmp_path / "hf" / "model.safetensors.index.json").exists()


def test_exported_files_are_mode_0644_and_bfloat16_loads(tmp_path, chat_tokenizer_path):
    old = os.umask(0o022)
    try:
        model = random_gpt(SHAPES["tied"])
        export(gpt_checkpoint(tmp_path / "m.ckpt", model, chat_tokenizer_path), tmp_path / "hf", dtype="bfloat16")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "hf").iterdir()}
    assert set(modes.values()) == {0o644}, modes
    assert not [p for p in (tmp_path / "hf").iterdir() if p.name.startswith(".")]  # no temporary files left
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert hf.dtype == torch.bfloat16
    idx = torch.randint(0, 512, (1, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits.float(), model(idx), atol=0.05, rtol=0.05)


def test_cli_exports_hf_by_default_and_keeps_the_flightmind_format(tmp_path, chat_tokenizer_path, capsys):
    from flightmind.cli import main

    ckpt = gpt_checkpoint(tmp_path / "m.ckpt", random_gpt(SHAPES["tied"]), chat_tokenizer_path)
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "hf")]) == 0
    assert "as hf to" in capsys.readouterr().out
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "llama"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "fm"), "--format", "flightmind"]) == 0
    assert json.loads((tmp_path / "fm" / "config.json").read_text())["format"] == "flightmind-gpt"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "x"), "--dtype", "q8_0"]) == 2
    assert "q8_0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert "hf (default)" in capsys.readouterr().out


def test_prompt_processor_comes_off_again_so_a_reimported_tokenizer_keeps_its_hash(chat_tokenizer_path):
    from tokenizers import Tokenizer, processors

    from flightmind.contracts import tokenizer_hash
    from flightmind.interop.hf import with_prompt_processor, without_prompt_processor

    plain = load_tokenizer(chat_tokenizer_path)
    byte_level = Tokenizer.from_str(plain.to_str())
    byte_level.post_processor = processors.ByteLevel(trim_offsets=False)  # as many downloaded tokenizers have
    for tokenizer in (plain, byte_level):
        exported = with_prompt_processor(tokenizer)
        assert exported.encode("gear down").ids == [0, *tokenizer.encode("gear down").ids]
        assert tokenizer_hash(without_prompt_processor(exported)) == tokenizer_hash(tokenizer)
        assert without_prompt_processor(tokenizer).to_str() == tokenizer.to_str()
