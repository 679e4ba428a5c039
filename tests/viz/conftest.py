"""Synthetic training logs written by verl's own logger classes (verl/utils/tracking.py), so the
files are in exactly the format a real run produces."""

import numpy as np
import pytest

BATCH = 8  # responses per step in the synthetic runs
PROMPT_LEN = 40.0


def synthetic_steps(n_steps=12, rpo=False, seed=0):
    """(step, metrics) records as verl's v1 trainer logs them: a validation record before training,
    then one record per step (validation merged in every 4th step)."""
    rng = np.random.default_rng(seed)
    records = [(0, {"val-core/synth/acc/mean@1": 0.20, "val-core/synth/reward/mean@1": 0.1})]
    for step in range(1, n_steps + 1):
        resp = float(60 + 5 * rng.random())
        gen = float(1.0 + rng.random())
        m = {
            "critic/score/mean": np.float32(0.2 + 0.05 * step + 0.01 * rng.random()),  # numpy scalar, as verl logs
            "critic/rewards/mean": 0.2 + 0.05 * step,
            "response_length/mean": resp,
            "prompt_length/mean": PROMPT_LEN,
            "perf/total_num_tokens": BATCH * (PROMPT_LEN + resp),
            "timing_s/gen": gen,
            "timing_s/reward": 0.1,
            "timing_s/old_log_prob": 0.3,
            "timing_s/adv": 0.01,
            "timing_s/update_actor": 0.8,
            "timing_s/update_weights": 0.05,
            "timing_s/step": gen + 1.5,
            "training/epoch": 0,
            "actor/pg_loss": float("nan"),  # orjson writes NaN as null
        }
        if step % 4 == 0:
            m["val-core/synth/acc/mean@1"] = 0.2 + 0.04 * step
            m["val-core/synth/reward/mean@1"] = 0.1 + 0.04 * step
            m["val-core/other/acc/mean@1"] = 0.1 + 0.02 * step
            m["timing_s/testing"] = 0.7
        if rpo:
            suffix = resp * 0.1
            m.update(
                {
                    "eff/generated_tokens": BATCH * suffix,
                    "eff/full_path_tokens": BATCH * resp,
                    "eff/token_saving_ratio": 0.9,
                    "rpo/cache/size": float(min(step * BATCH, 32)),
                    "rpo/prefix_fraction/mean": 0.9,
                    "dps/effective_ratio": 0.8,
                    "r2vpo/lambda": 0.01 * step,
                    "r2vpo/ratio_var/fresh": 1e-3,
                    "timing_s/rpo_prefix": 0.02,
                }
            )
        records.append((step, m))
    return records


def write_file_logger(path, records):
    """Write records with verl's FileLogger (honours VERL_FILE_LOGGER_PATH)."""
    import os

    from verl.utils.tracking import FileLogger

    old = os.environ.get("VERL_FILE_LOGGER_PATH")
    os.environ["VERL_FILE_LOGGER_PATH"] = str(path)
    try:
        logger = FileLogger("proj", "exp")
        for step, data in records:
            logger.log(data=data, step=step)
        logger.finish()
    finally:
        if old is None:
            os.environ.pop("VERL_FILE_LOGGER_PATH")
        else:
            os.environ["VERL_FILE_LOGGER_PATH"] = old
    return path


def write_tensorboard(directory, records):
    """Write records with verl's tensorboard adapter (honours TENSORBOARD_DIR)."""
    import os

    from verl.utils.tracking import _TensorboardAdapter

    old = os.environ.get("TENSORBOARD_DIR")
    os.environ["TENSORBOARD_DIR"] = str(directory)
    try:
        tb = _TensorboardAdapter("proj", "exp")
        for step, data in records:
            tb.log(data=data, step=step)
        tb.finish()
    finally:
        if old is None:
            os.environ.pop("TENSORBOARD_DIR")
        else:
            os.environ["TENSORBOARD_DIR"] = old
    return directory


@pytest.fixture
def grpo_jsonl(tmp_path):
    return write_file_logger(tmp_path / "grpo.jsonl", synthetic_steps(rpo=False, seed=1))


@pytest.fixture
def rpo_jsonl(tmp_path):
    return write_file_logger(tmp_path / "rpo.jsonl", synthetic_steps(rpo=True, seed=2))
