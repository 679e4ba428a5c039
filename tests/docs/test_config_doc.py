"""docs/config.md lists every rpo_verl key with its current default."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "config.md").read_text()


def _leaves(node, prefix):
    for key, value in node.items():
        if key == "_target_":
            continue
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}.{key}")
        else:
            yield f"{prefix}.{key}", value


def _documented_keys():
    trainer = OmegaConf.to_container(OmegaConf.load(ROOT / "rpo_verl/config/rpo_trainer.yaml"))
    cpu = OmegaConf.to_container(OmegaConf.load(ROOT / "rpo_verl/config/preset/cpu.yaml"))
    yield from _leaves(trainer["rpo_verl"], "rpo_verl")
    yield from _leaves(trainer["actor_rollout_ref"]["actor"]["policy_loss"]["r2vpo"], "actor_rollout_ref.actor.policy_loss.r2vpo")
    yield from _leaves(cpu["actor_rollout_ref"]["rollout"]["engine_kwargs"]["hf"], "actor_rollout_ref.rollout.engine_kwargs.hf")


def _render(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


@pytest.mark.parametrize(("key", "default"), list(_documented_keys()))
def test_key_documented_with_default(key, default):
    rows = [line for line in DOC.splitlines() if line.startswith(f"| `{key}` |")]
    assert rows, f"docs/config.md does not document {key}"
    assert f"`{_render(default)}`" in rows[0], f"{key}: docs/config.md shows another default than {default!r}"
