"""Model preparation: SmolLM2-135M-Instruct converted from GGUF, and a tiny random twin for tests."""

from rpo_verl.models.paths import cache_root, default_model_path, tokenizer_path
from rpo_verl.models.prepare import prepare_smollm2, prepare_tiny, prepare_tokenizer

__all__ = ["cache_root", "default_model_path", "tokenizer_path", "prepare_smollm2", "prepare_tiny", "prepare_tokenizer"]
