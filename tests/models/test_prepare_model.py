"""Model preparation: the tiny random model, idempotence, interrupted builds, and the real GGUF conversion."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rpo_verl.models import prepare
from rpo_verl.models.prepare import MARKER, prepare_smollm2, prepare_tiny

ROOT = Path(__file__).resolve().parents[2]


def _check_special_tokens(folder: Path):
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == 2
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.pad_token_id == 0
    config = json.loads((folder / "config.json").read_text())
    generation = json.loads((folder / "generation_config.json").read_text())
    for cfg in (config, generation):
        assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (1, 2, 0)
    return tokenizer


def _chat_ids(tokenizer, text: str) -> list[int]:
    messages = [{"role": "user", "content": text}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n") and f"<|im_start|>user\n{text}<|im_end|>" in prompt
    return tokenizer(prompt, add_special_tokens=False).input_ids


def test_tiny_model_builds_loads_and_is_a_noop_the_second_time(tmp_path):
    out = prepare_tiny(tmp_path / "tiny")
    assert (out / MARKER).is_file()
    tokenizer = _check_special_tokens(out)
    model = AutoModelForCausalLM.from_pretrained(str(out))
    cfg = model.config
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers) == (64, 128, 2)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.tie_word_embeddings) == (4, 2, True)
    assert model.dtype == torch.float32 and cfg.vocab_size == len(tokenizer)
    ids = torch.tensor([_chat_ids(tokenizer, "What is 2 + 3?")])
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], cfg.vocab_size) and torch.isfinite(logits).all()

    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    started = time.perf_counter()
    assert prepare_tiny(out) == out
    assert time.perf_counter() - started < 1.0
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes


def test_tiny_model_is_deterministic(tmp_path):
    a = AutoModelForCausalLM.from_pretrained(str(prepare_tiny(tmp_path / "a")))
    b = AutoModelForCausalLM.from_pretrained(str(prepare_tiny(tmp_path / "b")))
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name


def test_interrupted_build_leaves_nothing_and_is_redone(tmp_path, monkeypatch):
    out = tmp_path / "tiny"

    def crash(model, tokenizer, tmp):
        (tmp / "config.json").write_text("{}")
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(prepare, "_finish", crash)
        with pytest.raises(KeyboardInterrupt):
            prepare_tiny(out)
    assert not out.exists() and not list(tmp_path.glob(".tiny.tmp-*"))
    prepare_tiny(out)
    _check_special_tokens(out)


def test_outdated_recipe_is_rebuilt_and_foreign_folder_refused(tmp_path):
    out = prepare_tiny(tmp_path / "tiny")
    (out / MARKER).write_text(json.dumps({"recipe": {"kind": "tiny", "v": 0}}))
    prepare_tiny(out)
    assert json.loads((out / MARKER).read_text())["recipe"]["v"] == prepare.RECIPE_VERSION

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="--out"):
        prepare_tiny(foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_cli_prints_the_output_path(tmp_path):
    out = tmp_path / "cli-tiny"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "prepare_model.py"), "--tiny", "--out", str(out)],
        capture_output=True, text=True, check=True,
    )
    assert result.stdout.strip().splitlines()[-1] == str(out.resolve())
    assert (out / MARKER).is_file()


@pytest.mark.timeout(600)
def test_real_gguf_conversion_answers_sensibly(smollm2_path):
    """The GGUF conversion (done once per cache by the session fixture) gives the working instruct model."""
    out = smollm2_path
    assert prepare_smollm2() == out  # marker present: a no-op
    tokenizer = _check_special_tokens(out)
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (30, 576)
    ids = torch.tensor([_chat_ids(tokenizer, "What is the capital of France?")])
    with torch.no_grad():
        generated = model.generate(ids, max_new_tokens=12, do_sample=False)
    reply = tokenizer.decode(generated[0, ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in reply, reply
