"""Importing rpo_verl with any verl other than the pinned one fails, naming both versions."""

import importlib
from importlib import metadata

import pytest

import rpo_verl


def test_pinned_version_passes():
    assert metadata.version("verl") == rpo_verl.REQUIRED_VERL_VERSION


@pytest.mark.parametrize("installed", ["0.9.0", "0.10.0"])
def test_other_verl_version_fails_naming_both(monkeypatch, installed):
    real_version = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: installed if name == "verl" else real_version(name))
    with pytest.raises(ImportError) as err:
        importlib.reload(rpo_verl)
    assert type(err.value).__name__ == "VerlVersionError"
    assert installed in str(err.value) and "0.9.1" in str(err.value)
    monkeypatch.undo()
    importlib.reload(rpo_verl)


def test_missing_verl_fails_with_install_hint(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    with pytest.raises(ImportError, match="not installed"):
        importlib.reload(rpo_verl)
    monkeypatch.undo()
    importlib.reload(rpo_verl)
