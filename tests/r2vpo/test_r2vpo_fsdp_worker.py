"""R2VPOActorRolloutRefWorker's actor on verl's real FSDP2 engine (CPU platform, one gloo rank):
λ steps once per optimiser step, ``r2vpo_dual.json`` is written into the actor checkpoint, and a
new worker that loads the checkpoint continues with exactly the same λ."""

import json
import os
import subprocess
import sys

import pytest

from rpo_verl.models.paths import default_model_path

SCRIPT = os.path.join(os.path.dirname(__file__), "r2vpo_fsdp_worker_run.py")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    model = default_model_path(tiny=True)
    if not (model / "config.json").exists():
        pytest.skip(f"{model} missing: run `python scripts/prepare_model.py --tiny`")
    out = tmp_path_factory.mktemp("r2vpo_fsdp")
    env = {**os.environ, "VERL_PLATFORM": "cpu", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, SCRIPT, str(model), str(out)], env=env, capture_output=True, text=True, timeout=600
    )
    path = out / "result.json"
    assert path.exists(), f"worker script died (rc={proc.returncode}):\n{proc.stderr[-4000:]}"
    report = json.loads(path.read_text())
    assert "error" not in report, report["error"]
    return report


@pytest.mark.timeout(700)
def test_lambda_hooked_into_fsdp_optimizer_step(result):
    assert result["hooked"]
    assert result["steps_full"] == 4  # 4 train_batch calls (2 micro-batches each) -> 4 dual steps
    lams = result["lambda_full"]
    assert all(b > a for a, b in zip([0.0] + lams, lams))  # V̂ ≫ δ = 1e-4: λ rises every step
    first = result["metrics"][0]
    assert first["r2vpo/lambda"] == 0.0 and first["r2vpo/v_hat"] > 1e-4
    assert first["grad_norm"] > 0
    second = result["metrics"][1]
    assert second["r2vpo/lambda"] == lams[0]  # the loss used the λ of the previous optimiser step
    assert second["r2vpo/v_hat_last_step"] > 0 and "r2vpo/v_hat_stale" in second


@pytest.mark.timeout(700)
def test_lambda_saved_with_actor_checkpoint_and_resumed_exactly(result):
    assert result["dual_file"]
    assert result["lambda_restored"] == result["lambda_full"][1]
    assert result["lambda_resumed"] == result["lambda_full"][2:]  # bit-exact continuation
    # The model/optimizer came back too: the resumed run saw the same ratios.
    assert result["metrics"][4] == result["metrics"][2] and result["metrics"][5] == result["metrics"][3]


@pytest.mark.timeout(700)
def test_stock_verl_worker_steps_lambda_from_the_loss(result):
    """Without the hooks the loss detects the mini-batch end from verl's batch_num_tokens."""
    assert not result["auto_hooked"]
    assert result["steps_auto"] == 2
    assert result["lambda_auto"] == result["lambda_full"][:2]
