"""R²VPO through verl's own code paths: the policy-loss registry, ``ppo_loss`` and
``BaseEngine.train_batch`` (via the tiny engine in ``r2vpo_mini_engine``)."""

import pytest
import torch
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.utils.metric import Metric
from verl.workers.utils.padding import no_padding_2_padding

import rpo_verl.plugin
import rpo_verl.r2vpo
from rpo_verl.r2vpo import dual as dual_mod
from rpo_verl.r2vpo.dual import install_dual_hooks
from rpo_verl.r2vpo.loss import r2vpo_policy_loss
from r2vpo_mini_engine import MiniEngine, TinyPolicy, actor_config, make_data, make_loss_fn, to_minibatch

ROWS, MINIBATCHES, MICRO = 16, 3, 2


@pytest.fixture(autouse=True)
def fresh_process_dual():
    dual_mod.reset_dual()
    yield
    dual_mod.reset_dual()


def test_registered_in_verl_and_listed_in_plugin():
    rpo_verl.r2vpo.register()
    assert get_policy_loss_fn("r2vpo") is r2vpo_policy_loss
    assert "rpo_verl.r2vpo" in rpo_verl.plugin.COMPONENTS
    assert rpo_verl.plugin.expected_registrations()["policy_loss"] == ["r2vpo"]


def _minibatches(seed=0):
    rows = make_data(seed, ROWS * MINIBATCHES)
    return [to_minibatch(rows, torch.arange(k * ROWS, (k + 1) * ROWS), ROWS) for k in range(MINIBATCHES)]


def _direct_v_hat(model, data):
    """V̂ of the whole mini-batch at the current θ, computed independently of the loss."""
    with torch.no_grad():
        lp = no_padding_2_padding(model.flat_log_probs(data["input_ids"], data["attention_mask"]), data)
    mask = data["response_mask"].bool()
    r = torch.exp(lp - data["old_log_probs"]).double()[mask]
    return float(((r - r.mean()) ** 2).mean())


def _train(hooked: bool, minibatches, config, model=None, engine=None):
    rpo_verl.r2vpo.register()
    model = model or TinyPolicy(seed=0)
    engine = engine or MiniEngine(model, micro_batches=MICRO)
    ctl = dual_mod.get_dual()
    if hooked:
        install_dual_hooks(engine, ctl)
    loss_fn = make_loss_fn(config)
    trace = []
    for data in minibatches:
        expected_v_hat = _direct_v_hat(model, data)
        out = engine.train_batch(data.clone(), loss_fn)
        trace.append({"lam": ctl.value, "v_hat": ctl.last_v_hat, "expected_v_hat": expected_v_hat, "out": out})
    return trace, model, engine


def test_lambda_steps_once_per_optimizer_step_with_the_minibatch_variance():
    config = actor_config(delta=5e-3, eta=0.5)
    trace, _, _ = _train(True, _minibatches(), config)
    ctl = dual_mod.get_dual()
    assert ctl.steps == MINIBATCHES and ctl.hooked
    lam = 0.0
    for step in trace:
        # V̂ pooled over the micro-batches = the variance of the whole mini-batch's ratios.
        assert step["v_hat"] == pytest.approx(step["expected_v_hat"], rel=1e-6)  # float32 (r − 1)², float64 sums
        assert step["v_hat"] > 5e-3  # the noisy behaviour policy violates the budget ...
        lam = max(0.0, lam + 0.5 * (step["v_hat"] / 5e-3 - 1))
        assert step["lam"] == pytest.approx(lam, rel=1e-12)  # ... so λ rises by the normalised rule
    metrics = trace[-1]["out"]["metrics"]
    for key in ("r2vpo/lambda", "r2vpo/v_hat", "r2vpo/v_hat_fresh", "r2vpo/v_hat_stale", "r2vpo/soft_clip_frac"):
        assert all(isinstance(m, Metric) for m in metrics[key]) and len(metrics[key]) == MICRO
    assert metrics["r2vpo/lambda"][0].values == [trace[-2]["lam"]]  # the loss used the pre-step λ
    assert metrics["r2vpo/v_hat_stale"][0].values[0] > metrics["r2vpo/v_hat_fresh"][0].values[0]
    assert metrics["grad_norm"] > 0


def test_auto_step_without_hooks_gives_the_same_lambda():
    config = actor_config(delta=5e-3, eta=0.5)
    hooked, model_a, _ = _train(True, _minibatches(), config)
    dual_mod.reset_dual()
    auto, model_b, _ = _train(False, _minibatches(), config)
    assert not dual_mod.get_dual().hooked
    assert [s["lam"] for s in auto] == [s["lam"] for s in hooked]
    for a, b in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_resume_from_checkpoint_restores_lambda_and_continues_identically(tmp_path):
    config = actor_config(delta=2e-3, eta=0.3)
    batches = _minibatches(seed=3) + _minibatches(seed=4)
    full, model_full, _ = _train(True, batches, config)

    dual_mod.reset_dual()
    first, _, engine = _train(True, batches[:3], config)
    folder = tmp_path / "global_step_3" / "actor"
    engine.save_checkpoint(str(folder), None, 3, None)
    lam_saved = dual_mod.get_dual().value

    resumed_ctl = dual_mod.reset_dual()
    model = TinyPolicy(seed=123)  # different init: everything must come from the checkpoint
    engine2 = MiniEngine(model, micro_batches=MICRO)
    install_dual_hooks(engine2, resumed_ctl)
    engine2.load_checkpoint(str(folder), None, del_local_after_load=False)
    assert resumed_ctl.value == lam_saved
    rest, model_resumed, _ = _train(True, batches[3:], config, model=model, engine=engine2)
    assert [s["lam"] for s in first + rest] == [s["lam"] for s in full]
    for a, b in zip(model_full.parameters(), model_resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_forward_only_calls_do_not_touch_lambda():
    config = actor_config()
    ctl = dual_mod.get_dual()
    data = _minibatches()[0]
    engine = MiniEngine(TinyPolicy(), micro_batches=MICRO)
    install_dual_hooks(engine, ctl)
    with torch.no_grad():
        engine.forward_backward_batch(data.clone(), make_loss_fn(config), forward_only=True)
    assert ctl.pending_tokens == 0 and ctl.steps == 0


def test_context_wrapper_passes_every_call_form_through():
    """verl calls the loss closure as a loss and (top-k distillation) as a logits processor."""
    from rpo_verl.r2vpo.loss import _CONTEXT, with_r2vpo_context

    seen = []

    def closure(*args, **kwargs):
        seen.append((args, kwargs, _CONTEXT.group, _CONTEXT.stale_mask))
        return "ok"

    wrapped = with_r2vpo_context(closure)
    assert with_r2vpo_context(wrapped) is wrapped
    data = _minibatches()[0]
    assert wrapped(model_output={}, data=data, dp_group="dp") == "ok"
    assert wrapped(student_logits=1, data=data) == "ok"
    assert seen[0][2] == "dp" and seen[0][3].tolist() == data["r2vpo_stale"].bool().tolist()
    assert seen[1][1] == {"student_logits": 1, "data": data} and seen[1][2] is None
    assert _CONTEXT.group is None and _CONTEXT.stale_mask is None  # restored after the call
