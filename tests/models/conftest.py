"""Session fixtures for prepared models: converted once into the shared model cache, then reused."""

import pytest

from rpo_verl.models import prepare_smollm2, prepare_tiny


@pytest.fixture(scope="session")
def smollm2_path():
    """SmolLM2-135M-Instruct at its default cache path: converted from the GGUF on first use (20-140 s
    on 2 cores, depending on load), instant afterwards thanks to the completion marker."""
    return prepare_smollm2()


@pytest.fixture(scope="session")
def tiny_path():
    return prepare_tiny()
