"""Packaging: building rpo_verl (wheel and editable install) prints no setuptools warning, and the
wheel carries the config YAML files (rpo_trainer.yaml and the data-only preset folder)."""

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# setuptools' warnings as pip relays them from the build backend.
SETUPTOOLS_WARNING = re.compile(r"(BuildBackendWarning|SetuptoolsDeprecationWarning|SetuptoolsWarning|"
                                r"absent from the `packages` configuration|Package would be ignored)")


def _source_copy(dest: Path) -> Path:
    """The tracked (and untracked, not ignored) files of the checkout: what a fresh clone holds."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split()
    for name in files:
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(src.read_bytes())
    return dest


def _pip(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=timeout)


def _warnings(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if SETUPTOOLS_WARNING.search(line)]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return _source_copy(tmp_path_factory.mktemp("src"))


def test_wheel_builds_without_setuptools_warnings_and_carries_the_config(source, tmp_path):
    out = _pip("wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(source))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert _warnings(out.stdout + out.stderr) == []
    (wheel,) = (tmp_path / "dist").glob("rpo_verl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "rpo_verl/config/rpo_trainer.yaml" in names
    assert "rpo_verl/config/preset/cpu.yaml" in names
    assert not any("__pycache__" in n for n in names)


def test_editable_install_prints_no_setuptools_warning(source, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    out = _pip("--python", str(venv / "bin" / "python"), "install", "--no-deps", "-e", str(source))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert _warnings(out.stdout + out.stderr) == []
