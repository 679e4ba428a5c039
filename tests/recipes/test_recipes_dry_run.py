"""Every recipe's final Hydra config composes, passes verl's validate_config and rpo_verl's start-up
checks and reaches the point of starting Ray (rpo_verl.dry_run=true), so a typo in any recipe
fails CI. Environment problems of this CPU machine (no GPU, no 7B model on disk) are only warned
about in a dry run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted(p for p in (ROOT / "recipes").glob("*.sh") if not p.name.startswith("_"))
DRY_RUN_OK = "dry run: the config composes"


def _dry_run(recipe: Path, *overrides: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable, CKPT_ROOT=str(tmp_path / "ckpt"), RPO_VERL_RUN=str(tmp_path / "run"))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return subprocess.run(
        ["bash", str(recipe), "rpo_verl.dry_run=true", *overrides],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )


def test_every_paper_recipe_exists():
    names = {p.name for p in RECIPES}
    assert {
        "quickstart_cpu.sh", "grpo_1.5b.sh", "dapo_7b.sh", "rpo_grpo_1.5b.sh", "rpo_dapo_7b.sh",
        "dps_grpo_1.5b.sh", "dps_rpo_dapo_7b.sh", "r2vpo_1.5b.sh",
    } <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_config_composes_and_validates(recipe, tmp_path):
    out = _dry_run(recipe, tmp_path=tmp_path)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert DRY_RUN_OK in out.stdout


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("rpo_verl.rpo.prefix.mode=head", "rpo_verl.rpo.prefix.mode"),
        ("+rpo_verl.rpo.typo=1", "rpo_verl.rpo.typo"),
        ("rpo_verl.dps.decay=1.5", "rpo_verl.dps.decay"),
    ],
)
def test_recipe_with_a_bad_override_fails_naming_the_key(override, message, tmp_path):
    out = _dry_run(ROOT / "recipes" / "rpo_dapo_7b.sh", override, tmp_path=tmp_path)
    assert out.returncode != 0
    assert message in out.stdout + out.stderr


def test_user_overrides_come_last():
    # Slurm and users append overrides: "$@" must close the entry point's argument list.
    for recipe in RECIPES:
        lines = [line.strip() for line in recipe.read_text().splitlines()]
        closing = [i for i, line in enumerate(lines) if line.endswith('"$@"') and not line.startswith("for ")]
        assert closing, f"{recipe.name}: passes no user overrides"
        i = closing[0]
        assert lines[i - 1].endswith("\\"), f"{recipe.name}: '\"$@\"' is not part of the entry point's arguments"
