"""LoRA fine-tuning through the public commands: fit (the README's fine-tune, in a subprocess), test,
export and synth-commands (in this process, through `flightmind.cli.main`)."""

import json
import shutil

import pytest
import torch

from flightmind.contracts import load_tokenizer
from flightmind.model.checkpoint import build_model, load_trained, read_checkpoint
from tests.helpers import REPO, flightmind, flightmind_here, recomputed_action_accuracy, scalars

CONFIG = REPO / "configs" / "finetune_smoke.yaml"


@pytest.fixture(scope="module")
def finetune_run(smoke_run, tmp_path_factory):
    """The README's smoke fine-tune, in a directory holding only the smoke run's checkpoint and tokenizer."""
    smoke_cwd, _ = smoke_run
    cwd = tmp_path_factory.mktemp("finetune")
    for part in ("checkpoints/smoke/final.ckpt", "data/demo/tokenizer.json"):
        (cwd / part).parent.mkdir(parents=True)
        shutil.copy(smoke_cwd / part, cwd / part)
    result = flightmind("fit", "-c", CONFIG, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd, result


@pytest.mark.slow
def test_smoke_finetune_trains_the_adapters_and_its_masked_loss_falls(finetune_run):
    cwd, result = finetune_run
    output = result.stdout + result.stderr
    assert "wrote 2,000 synthetic commands to data/finetune/smoke_commands.jsonl" in output
    assert "LoRA r=16 α=32 on q, k, v, o, gate, up, down of d4 (checkpoints/smoke/final.ckpt): 376,832 trainable" in output

    run_dir = cwd / "lightning_logs" / "version_0"
    losses = scalars(run_dir, "train/loss")
    assert [step for step, _ in losses] == list(range(30))
    assert losses[0][1] - losses[-1][1] >= 1.0
    val = [value for _, value in scalars(run_dir, "val/loss")]
    assert len(val) == 2 and val[1] < val[0]
    assert scalars(run_dir, "params/trainable")[0][1] == 376_832
    names = sorted(p.name for p in (cwd / "checkpoints" / "finetune_smoke").iterdir())
    assert names == ["best.ckpt", "final.ckpt", "last.ckpt", "step_15.ckpt", "step_30.ckpt"]


@pytest.mark.slow
def test_finetuned_checkpoint_tests_and_exports_to_a_plain_gpt(finetune_run, monkeypatch, capsys):
    cwd, _ = finetune_run
    ckpt = cwd / "checkpoints" / "finetune_smoke" / "final.ckpt"
    tested = flightmind_here("test", "-c", CONFIG, "--ckpt_path", ckpt, cwd=cwd, monkeypatch=monkeypatch, capsys=capsys)
    assert tested.returncode == 0, tested.stderr[-3000:]
    for metric in ("test/loss", "test/ppl", "test/action_acc"):
        assert metric in tested.stdout

    exported = flightmind_here("export", "--ckpt", ckpt, "--out", cwd / "exported", cwd=cwd, monkeypatch=monkeypatch, capsys=capsys)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert "LoRA r=16 α=32.0 merged" in exported.stdout
    model, tokenizer = load_trained(cwd / "exported")
    adapted = build_model(read_checkpoint(ckpt), merge=False).eval()
    idx = torch.randint(0, tokenizer.get_vocab_size(), (2, 64), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model(idx), adapted(idx), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_generate_reads_the_finetuned_checkpoint_and_its_export_alike(finetune_run, tmp_path, capsys):
    from flightmind.cli import main
    from flightmind.export import export
    from flightmind.model.generate import complete

    cwd, _ = finetune_run
    ckpt = cwd / "checkpoints" / "finetune_smoke" / "final.ckpt"
    export(ckpt, tmp_path / "exported")
    prompt = "turn heading three six zero"
    printed = []
    for source in (ckpt, tmp_path / "exported"):
        args = ["generate", "--ckpt", str(source), "--prompt", prompt, "--max-new-tokens", "24", "--temperature", "0", "--device", "cpu"]
        assert main(args) == 0
        printed.append(capsys.readouterr().out)
    model, tokenizer = load_trained(ckpt)
    assert printed == [prompt + complete(model, tokenizer, prompt, 24, temperature=0.0).text + "\n"] * 2
    # What generate ran is the fine-tuned model, adapters merged, not the base.
    adapted = build_model(read_checkpoint(ckpt), merge=False).eval()
    base = build_model(read_checkpoint(cwd / "checkpoints" / "smoke" / "final.ckpt")).eval()
    idx = torch.randint(0, tokenizer.get_vocab_size(), (2, 64), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model(idx), adapted(idx), atol=1e-5, rtol=1e-5)
    assert (model(idx) - base(idx)).abs().max() > 0.1


@pytest.mark.slow
def test_logged_action_accuracy_is_what_the_final_weights_score(finetune_run, monkeypatch):
    from flightmind.training.lightning_cli import instantiate_config

    cwd, _ = finetune_run
    monkeypatch.chdir(cwd)
    _, data, _ = instantiate_config("-c", str(CONFIG))
    data.setup("validate")
    model = build_model(read_checkpoint(cwd / "checkpoints" / "finetune_smoke" / "final.ckpt"))
    expected = recomputed_action_accuracy(model, data.tokenizer(), data.action_set, max_new_tokens=24)
    logged = scalars(cwd / "lightning_logs" / "version_0", "val/action_acc")
    assert [step for step, _ in logged] == [14, 29] and logged[-1][1] == pytest.approx(expected)


def test_missing_base_checkpoint_is_one_clear_error(tmp_path, monkeypatch, capsys):
    result = flightmind_here("fit", "-c", CONFIG, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "base_checkpoint checkpoints/smoke/final.ckpt does not exist: pretrain first" in result.stderr


@pytest.mark.slow
def test_export_of_a_pretraining_checkpoint_ships_the_tokenizer_it_carries(smoke_run, tmp_path, chat_tokenizer_path, monkeypatch, capsys):
    smoke_cwd, _ = smoke_run
    ckpt = smoke_cwd / "checkpoints" / "smoke" / "final.ckpt"
    done = flightmind_here("export", "--ckpt", ckpt, "--out", tmp_path / "out", cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "no adapters" in done.stdout
    model, tokenizer = load_trained(tmp_path / "out")
    assert tokenizer.to_str() == load_tokenizer(smoke_cwd / "data/demo/tokenizer.json").to_str()
    idx = torch.randint(0, model.config.vocab_size, (1, 32), generator=torch.Generator().manual_seed(1))
    assert torch.equal(model(idx), build_model(read_checkpoint(ckpt)).eval()(idx))
    # --tokenizer still overrides the checkpoint's.
    done = flightmind_here("export", "--ckpt", ckpt, "--out", tmp_path / "out", "--tokenizer", chat_tokenizer_path,
                          cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert done.returncode == 0, done.stderr[-3000:]
    assert load_trained(tmp_path / "out")[1].to_str() == load_tokenizer(chat_tokenizer_path).to_str()


def test_synth_commands_same_seed_same_file(tmp_path, monkeypatch, capsys):
    for name in ("a", "b"):
        result = flightmind_here("synth-commands", "--n", 90, "--out", tmp_path / f"{name}.jsonl", "--seed", 3,
                                 cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
        assert result.returncode == 0, result.stderr[-3000:]
    assert "wrote 90 commands" in result.stdout and "heading 10, altitude 10" in result.stdout
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    records = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert len(records) == 90 and all(json.loads(r["messages"][2]["content"].split("\n")[0])["action"] for r in records)
    listed = flightmind_here("--help", cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys).stdout
    assert "  synth-commands " in listed and "  export " in listed


def test_d24_config_is_the_specs_setup(capsys):
    import yaml

    from flightmind.training.lightning_cli import lightning_cli
    from flightmind.model import GPT, GPTConfig
    from flightmind.model.lora import apply_lora, count_parameters, mark_only_lora_as_trainable

    with pytest.raises(SystemExit) as done:
        lightning_cli(["fit", "-c", str(REPO / "configs" / "finetune_lora.yaml"), "--print_config"])
    assert done.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    lora = config["model"]["init_args"]
    assert config["trainer"]["devices"] == 1 and config["trainer"]["precision"] == "bf16-mixed"
    assert (lora["lora_r"], lora["lora_alpha"]) == (16, 32.0)
    assert lora["lora_targets"] == ["q", "k", "v", "o", "gate", "up", "down"]
    assert lora["base_checkpoint"] == "checkpoints/d24/final.ckpt"
    with torch.device("meta"):
        model = apply_lora(GPT(GPTConfig.from_depth(24)), r=lora["lora_r"], alpha=lora["lora_alpha"], targets=lora["lora_targets"])
    mark_only_lora_as_trainable(model)
    trainable, total = count_parameters(model)
    assert 0.01 <= trainable / total <= 0.015


@pytest.mark.slow
def test_generate_chat_asks_the_finetuned_model_in_its_template(finetune_run, capsys):
    from flightmind.cli import main
    from flightmind.data.chat import DEFAULT_SYSTEM_PROMPT
    from flightmind.generate import chat_prompt
    from flightmind.model.generate import complete

    cwd, _ = finetune_run
    ckpt = cwd / "checkpoints" / "finetune_smoke" / "final.ckpt"
    prompt = "squawk seven seven zero zero"
    args = ["generate", "--ckpt", str(ckpt), "--prompt", prompt, "--chat", "--max-new-tokens", "24", "--temperature", "0", "--device", "cpu"]
    assert main(args) == 0
    model, tokenizer = load_trained(ckpt)
    ids = chat_prompt(tokenizer, prompt, DEFAULT_SYSTEM_PROMPT)
    assert capsys.readouterr().out == complete(model, tokenizer, prompt, 24, temperature=0.0, prompt_ids=ids).text + "\n"
    assert main(["generate", "--ckpt", str(ckpt), "--prompt", prompt, "--system", "x"]) == 2
    assert "--system sets the system turn of --chat" in capsys.readouterr().err
