"""The dual variable λ: update rules, pooling over micro-batches, the optimiser/checkpoint hooks
and exact resume."""

import json
import os
import shutil

import pytest
import torch

from rpo_verl.r2vpo import dual as dual_mod
from rpo_verl.r2vpo.config import R2VPOConfig
from rpo_verl.r2vpo.dual import CHECKPOINT_FILE, DualController, dual_update, install_dual_hooks


@pytest.fixture(autouse=True)
def fresh_process_dual():
    dual_mod.reset_dual()
    yield
    dual_mod.reset_dual()


def test_update_rules():
    assert dual_update(0.0, 0.01, 5e-3, 0.1, "normalised") == pytest.approx(0.1)  # 0 + 0.1·(2 − 1)
    assert dual_update(0.3, 0.0, 5e-3, 0.1, "normalised") == pytest.approx(0.2)  # 0.3 + 0.1·(0 − 1)
    assert dual_update(0.05, 0.0, 5e-3, 0.1, "normalised") == 0.0  # projected onto λ ≥ 0
    assert dual_update(1.0, 0.025, 5e-3, 10.0, "absolute") == pytest.approx(1.2)  # 1 + 10·(0.025 − 0.005)
    with pytest.raises(ValueError, match="dual_rule"):
        dual_update(0.0, 0.0, 1.0, 1.0, "clipped")


@pytest.mark.parametrize("rule", ["normalised", "absolute"])
def test_lambda_rises_above_budget_and_decays_to_zero_below(rule):
    ctl = DualController()
    ctl.configure(R2VPOConfig(delta=5e-3, eta=0.5 if rule == "normalised" else 50.0, dual_rule=rule))
    history = [ctl.step(v_hat=2e-2) for _ in range(5)]  # V̂ = 4δ
    assert all(b > a for a, b in zip([0.0] + history, history))
    peak = history[-1]
    decay = [ctl.step(v_hat=1e-3) for _ in range(60)]  # V̂ = δ/5
    assert all(b <= a for a, b in zip([peak] + decay, decay))
    assert decay[-1] == 0.0 and min(decay) == 0.0
    assert ctl.step(v_hat=0.0) == 0.0  # stays at the boundary
    assert ctl.steps == 66 and ctl.last_v_hat == 0.0


def test_minibatch_variance_pools_micro_batches_exactly():
    """V̂ of the optimiser mini-batch from per-micro-batch sums = the variance of all its ratios."""
    g = torch.Generator().manual_seed(0)
    ratios = [torch.exp(0.1 * torch.randn(n, generator=g)).double() for n in (5, 17, 9)]
    ctl = DualController()
    ctl.configure(R2VPOConfig(delta=1e-3, eta=0.2))
    for r in ratios:
        ctl.observe(r.numel(), float((r - 1).sum()), float(((r - 1) ** 2).sum()))
    everything = torch.cat(ratios)
    v_hat = float(((everything - everything.mean()) ** 2).mean())
    lam = ctl.step()
    assert ctl.last_v_hat == pytest.approx(v_hat, rel=1e-10)
    assert lam == pytest.approx(max(0.0, 0.2 * (v_hat / 1e-3 - 1)), rel=1e-10)
    assert ctl.step() is None  # nothing observed since: an optimiser step of another loss is a no-op


def test_configure_keeps_running_and_restored_lambda():
    ctl = DualController()
    ctl.configure(R2VPOConfig(lambda_init=0.7))
    assert ctl.value == 0.7
    ctl.step(v_hat=1.0)
    lam = ctl.value
    ctl.configure(R2VPOConfig(lambda_init=0.7))  # every loss call reconfigures: λ must survive
    assert ctl.value == lam
    other = DualController()
    other.load_state_dict(ctl.state_dict())
    other.configure(R2VPOConfig(lambda_init=0.0))
    assert other.value == lam


class _Engine:
    """Stand-in for a verl engine: the three methods the hooks wrap, with verl's signatures."""

    def __init__(self):
        self.calls = []

    def optimizer_step(self):
        self.calls.append("step")
        return 1.25  # grad norm

    def save_checkpoint(self, local_path, hdfs_path=None, global_step=0, max_ckpt_to_keep=None, **kwargs):
        os.makedirs(local_path, exist_ok=True)
        with open(os.path.join(local_path, "model.bin"), "w") as f:
            f.write(str(global_step))
        self.calls.append("save")

    def load_checkpoint(self, local_path, hdfs_path=None, del_local_after_load=True, **kwargs):
        assert os.path.exists(os.path.join(local_path, "model.bin"))
        if del_local_after_load:  # verl may delete the folder after loading
            shutil.rmtree(local_path)
        self.calls.append("load")

    def get_data_parallel_group(self):
        return None


def _observe_batch(ctl, seed, spread):
    g = torch.Generator().manual_seed(seed)
    r = torch.exp(spread * torch.randn(64, generator=g)).double()
    ctl.observe(r.numel(), float((r - 1).sum()), float(((r - 1) ** 2).sum()))


def test_hooks_step_after_optimizer_and_resume_restores_lambda_exactly(tmp_path):
    cfg = R2VPOConfig(delta=5e-3, eta=0.3)
    engine = _Engine()
    ctl = install_dual_hooks(engine, dual_mod.get_dual())
    assert install_dual_hooks(engine, ctl) is ctl  # idempotent: no double wrapping
    ctl.configure(cfg)
    assert ctl.hooked
    for step in range(4):
        _observe_batch(ctl, step, spread=0.2)
        assert engine.optimizer_step() == 1.25
    assert engine.calls == ["step"] * 4 and ctl.steps == 4
    lam_at_save = ctl.value
    assert lam_at_save > 0
    folder = tmp_path / "global_step_4" / "actor"
    engine.save_checkpoint(str(folder), None, 4, None)
    saved = json.loads((folder / CHECKPOINT_FILE).read_text())
    assert saved["lambda"] == lam_at_save and saved["steps"] == 4

    # Continue the original run two more steps ...
    for step in (4, 5):
        _observe_batch(ctl, step, spread=0.1)
        engine.optimizer_step()
    reference = ctl.value

    # ... and resume a new process-wide controller from the checkpoint, which verl deletes after loading.
    resumed = dual_mod.reset_dual()
    engine2 = _Engine()
    install_dual_hooks(engine2, resumed)
    engine2.load_checkpoint(str(folder), None, del_local_after_load=True)
    assert not folder.exists() and engine2.calls == ["load"]
    resumed.configure(cfg)
    assert resumed.value == lam_at_save  # bit-exact
    assert resumed.steps == 4
    for step in (4, 5):
        _observe_batch(resumed, step, spread=0.1)
        engine2.optimizer_step()
    assert resumed.value == reference


def test_no_dual_file_when_r2vpo_unused_and_warning_on_missing_file(tmp_path, caplog):
    engine = _Engine()
    ctl = install_dual_hooks(engine, dual_mod.get_dual())
    engine.save_checkpoint(str(tmp_path / "a"))
    assert not (tmp_path / "a" / CHECKPOINT_FILE).exists()  # another loss mode: checkpoint untouched
    engine.optimizer_step()
    assert ctl.steps == 0
    engine.load_checkpoint(str(tmp_path / "a"), del_local_after_load=False)
    with caplog.at_level("WARNING", logger="rpo_verl.r2vpo.dual"):
        ctl.configure(R2VPOConfig(lambda_init=0.25))
    assert ctl.value == 0.25
    assert "without r2vpo_dual.json" in caplog.text


def test_corrupt_state_is_rejected(tmp_path):
    ctl = DualController()
    with pytest.raises(ValueError, match="lambda"):
        ctl.load_state_dict({"version": 1, "lambda": -1.0})
    with pytest.raises(ValueError, match="version"):
        ctl.load_state_dict({"version": 99, "lambda": 0.0})


def test_lambda_ceiling():
    assert dual_update(9.9, 1.0, 5e-3, 0.1, "normalised", lambda_max=10.0) == 10.0  # 9.9 + 19.9 → 10
    assert dual_update(9.9, 1.0, 5e-3, 0.1, "normalised") == pytest.approx(29.8)  # no ceiling
    assert dual_update(10.0, 0.0, 5e-3, 0.1, "normalised", lambda_max=10.0) == pytest.approx(9.9)  # comes back down
    ctl = DualController()
    ctl.configure(R2VPOConfig())  # the default ceiling: 10
    for _ in range(20):
        ctl.step(v_hat=1.7)  # issue 15's stale V̂: 340 δ; without the ceiling λ would reach 678
    assert ctl.value == 10.0 and ctl.state_dict()["lambda_max"] == 10.0
    restored = DualController()
    restored.load_state_dict({**ctl.state_dict(), "lambda": 25.0})
    restored.configure(R2VPOConfig(lambda_max=5.0))  # a lower ceiling on resume clips the restored λ
    assert restored.value == 5.0
    with pytest.raises(ValueError, match="lambda_max"):
        R2VPOConfig(lambda_init=2.0, lambda_max=1.0)
