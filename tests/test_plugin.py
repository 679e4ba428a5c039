"""Contract: a fresh process that only imports verl sees every rpo_verl registration, in a Ray
worker too (verl swallows plugin import errors, so only this test would notice a broken plugin)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PROBE = Path(__file__).with_name("plugin_probe.py")

# Names later components must never silently lose (kind -> names), checked on top of the plugin's
# own list so that an emptied COMPONENTS tuple cannot pass.
REQUIRED: dict[str, list[str]] = {}


def _run_probe(extra_code: str = "") -> dict:
    code = textwrap.dedent(extra_code) + f"\nimport runpy; runpy.run_path({str(PROBE)!r}, run_name='__main__')\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_USE_EXTERNAL")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _assert_complete(report: dict) -> None:
    assert report["loaded_by_verl"], "verl did not load the rpo_verl.plugin entry point"
    assert not report["failed"], f"plugin components failed to register: {report['failed']}"
    assert not report["missing"], f"registered names missing from verl's registries: {report['missing']}"
    for kind, names in REQUIRED.items():
        assert set(names) <= set(report["expected"].get(kind, [])), f"{kind}: {names} not all registered"


def test_fresh_process_importing_verl_sees_every_registration():
    _assert_complete(_run_probe())


def test_contract_fails_when_plugin_import_breaks():
    # Make `import rpo_verl.plugin` raise inside verl's entry-point loading; verl hides the error.
    breaker = """
        import sys, importlib.abc
        class _Break(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "rpo_verl.plugin":
                    raise ImportError("broken on purpose by the test")
        sys.meta_path.insert(0, _Break())
    """
    report = _run_probe(breaker)
    with pytest.raises(AssertionError, match="did not load"):
        _assert_complete(report)


def test_ray_worker_sees_every_registration():
    ray = pytest.importorskip("ray")
    source = PROBE.read_text()

    def probe_in_worker(src: str) -> dict:
        namespace: dict = {"__name__": "plugin_probe"}
        exec(compile(src, "plugin_probe.py", "exec"), namespace)
        return namespace["probe"]()

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        report = ray.get(ray.remote(probe_in_worker).remote(source), timeout=240)
    finally:
        ray.shutdown()
    _assert_complete(report)
