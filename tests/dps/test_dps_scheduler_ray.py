"""The named Ray actor: a killed scheduler restarts from its snapshot and continues identically."""

import uuid

import numpy as np
import pytest

from rpo_verl.dps.config import DPSConfig
from rpo_verl.dps.core import SchedulerCore
from rpo_verl.dps.state_io import diff_states, load_state

ray = pytest.importorskip("ray")

from rpo_verl.dps.scheduler import DPSSchedulerClient, get_scheduler  # noqa: E402


def assert_states_identical(a, b):
    assert diff_states(a, b) == []


def _rates(ids, step):
    r = ((ids * 7 + step * 3) % 9) / 8.0
    r[(ids + step) % 23 == 0] = np.nan
    return r


@pytest.mark.timeout(240)
def test_actor_kill_restart_resume_equivalence(tmp_path):
    snapshot = str(tmp_path / "dps_snapshot.npz")
    cfg = DPSConfig(enable=True, seed=5, snapshot_path=snapshot, actor_name=f"dps_test_{uuid.uuid4().hex[:8]}")
    straight = SchedulerCore(cfg, 120, rollouts_per_prompt=4)
    expected_ids = []
    for t in range(16):
        ids = straight.select(10)
        expected_ids.append(ids)
        straight.update(ids, _rates(ids, t))

    ray.init(num_cpus=1, include_dashboard=False, namespace=f"rpo_verl_test_{uuid.uuid4().hex[:8]}",
             log_to_driver=False)
    try:
        client = DPSSchedulerClient.create(cfg, num_prompts=120, rollouts_per_prompt=4)
        assert get_scheduler(cfg.actor_name) is not None
        pid0 = client.info()["pid"]
        for t in range(8):
            ids = client.select(10)
            np.testing.assert_array_equal(ids, expected_ids[t])
            client.update(ids, _rates(ids, t))
        ray.kill(client.handle, no_restart=False)  # killed between an update and the next select
        for t in range(8, 16):
            ids = client.select(10)
            np.testing.assert_array_equal(ids, expected_ids[t])
            if t == 11:
                ray.kill(client.handle, no_restart=False)  # killed between a select and its update
            client.update(ids, _rates(ids, t))
        info = client.info()
        assert info["pid"] != pid0 and info["restored_from"] == snapshot
        assert_states_identical(straight.state_dict(), client.state_dict())
        assert_states_identical(straight.state_dict(), load_state(snapshot))
        assert client.metrics()["dps/step"] == 16

        # Explicit save/load (what the trainer does with verl's checkpoint) round-trips too.
        path = str(tmp_path / "ckpt.npz")
        client.save(path)
        client.update([0, 1], [0.5, 0.5])
        client.load(path)
        assert_states_identical(straight.state_dict(), client.state_dict())
    finally:
        ray.shutdown()
