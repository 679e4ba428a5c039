"""End to end: the default console (rpo_verl.console=steps) of a short CPU run with RPO is short
and carries no unexplained warning, while every metric still reaches metrics.jsonl.

The tiny random model, 4 steps of GRPO + RPO (lazy cache over a 4-prompt pool, so steps 3-4 continue
cached paths), validation before and after. Ray's log deduplication is off (``run_session`` sets
``RAY_DEDUP_LOGS=0``), so every line of every worker is counted.
"""

import re

import pytest

from rpo_verl.trainer.metrics_file import read_records, run_files

pytestmark = pytest.mark.e2e

STEPS = 4
# The bound for the quick start, "under 150 lines for 10 steps", as a start-up allowance
# plus a per-step allowance (60 + 9 x 10 = 150).
MAX_LINES = 60 + 9 * STEPS
MAX_LINES_PER_STEP = 3  # from one step line to the next: the step line and the weight push
# verl's own lines of a checkpoint save (trainer.save_freq), not counted per step
CHECKPOINT_LINE = re.compile(r"Saving checkpoint to |\[Rank \d+\] Saved ")

# A warning of any kind: Python's (UserWarning: ...), logging's (WARNING:..., - WARNING -), a
# print("Warning: ..."), torch's glog style (W1203 18:00:50...).
WARNING_LINE = re.compile(r"\w*Warning\b|\bWARNING\b|\bW\d{4} \d\d:")
# Warning lines the console may show, each with the reason it is not filtered at its source.
EXPLAINED_WARNINGS = {
    r"Warning: Failed to set NUMA affinity": "a print() in verl's set_numa_affinity (no libnuma on this "
                                             "machine); print cannot be filtered without patching verl",
    r"WARNING authentication_token_setup\.py": "Ray's driver notice that token authentication is on",
    r"trainer\.total_training_steps=\d+ needs \d+ epochs": "rpo_verl's own notice: it raises total_epochs",
}


def test_default_console_is_short_and_explained(tiny_model_path, add_prompts, dense_reward, rpo_main, tmp_path):
    train = add_prompts(tmp_path / "train.parquet", 4)
    val = add_prompts(tmp_path / "val.parquet", 4, seed=5)
    run_dir = tmp_path / "run"
    out = rpo_main([
        "preset=cpu", f"actor_rollout_ref.model.path={tiny_model_path}",
        f"data.train_files={train}", f"data.val_files={val}",
        "data.train_batch_size=2", "data.max_prompt_length=64", "data.max_response_length=16",
        "actor_rollout_ref.rollout.n=4", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        f"reward.custom_reward_function.path={dense_reward}",
        "rpo_verl.rpo.enable=true", "rpo_verl.rpo.cache.init=lazy", "rpo_verl.rpo.prefix.mode=ratio",
        f"trainer.total_training_steps={STEPS}", f"trainer.save_freq={STEPS}", f"trainer.test_freq={STEPS}",
        f"trainer.default_local_dir={run_dir}", "trainer.experiment_name=e2e_console",
    ], timeout=600, log_path=tmp_path / "console.log")
    assert out.returncode == 0, out.stdout[-6000:]
    lines = [line for line in out.stdout.splitlines() if line.strip()]

    step_lines = [i for i, line in enumerate(lines) if re.search(r"\[rpo_verl\] step \d+/%d \|" % STEPS, line)]
    assert len(step_lines) == STEPS, "\n".join(lines)
    for a, b in zip(step_lines, step_lines[1:]):
        between = [line for line in lines[a:b] if not CHECKPOINT_LINE.search(line)]
        assert len(between) <= MAX_LINES_PER_STEP, "\n".join(lines[a:b + 1])
    assert len(lines) <= MAX_LINES, f"{len(lines)} console lines for {STEPS} steps:\n" + "\n".join(lines)

    text = "\n".join(lines)
    assert "[rpo_verl] training steps 1-4; rpo_verl features on: rpo;" in text
    assert "full logs of every process: " in text
    assert "[rpo_verl] validation before training: val acc" in text
    assert re.search(r"step 4/4 \| reward [-\d.]+ \| val acc [\d.]+ \| tokens \d+ \(-\d+% vs \d+ full-path\)", text)
    assert "[rpo_verl] training finished at step 4/4" in text
    assert not re.search(r"step:\d+ - ", text), "verl's per-step metric dump is on the default console"
    assert "Training Progress" not in text, "verl's progress bar is on the default console"
    assert "validation metrics: {" not in text, "verl's validation-metrics dump is on the default console"

    unexplained = [line for line in lines if WARNING_LINE.search(line)
                   and not any(re.search(p, line) for p in EXPLAINED_WARNINGS)]
    assert unexplained == [], "\n".join(unexplained)

    # every metric still goes to the metrics file
    steps = {s: m for s, m in read_records(run_files(str(run_dir / "metrics.jsonl"))) if "training/global_step" in m}
    assert sorted(steps) == list(range(1, STEPS + 1))
    assert all(len(m) > 50 for m in steps.values())
    assert steps[1]["features/rpo"] == 1.0 and "eff/full_path_equiv_tokens" in steps[STEPS]
