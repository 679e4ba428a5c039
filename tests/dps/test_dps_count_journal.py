"""Sample counts outside the per-update snapshot (count_journal) and the actor body's restore, without Ray.

``DPSScheduler`` is the plain class the Ray actor wraps; a "restart" here is a new instance built
with the same arguments, as Ray's ``max_restarts`` does.
"""

import os

import numpy as np
import pytest

from rpo_verl.dps.count_journal import CountJournal, CountJournalError, journal_files
from rpo_verl.dps.scheduler import DPSScheduler
from rpo_verl.dps.state_io import diff_states, load_state

N = 97


def _rates(ids, step):
    return ((ids * 7 + step * 3) % 9) / 8.0


def _actor(path, **extra):
    return DPSScheduler({"enable": True, "selector": "dps", "seed": 3, "snapshot_path": str(path), **extra}, N, 4)


def _drive(actor, start, steps, batch=12):
    for t in range(start, start + steps):
        ids = actor.select(batch, select_index=t)
        actor.update(ids, _rates(ids, t), update_index=t)


def _same(a, b):
    assert diff_states(a, b) == []
    assert a["sample_counts"].dtype == b["sample_counts"].dtype


@pytest.mark.parametrize("every", [1, 3])
def test_restart_restores_exact_state_through_journal_and_compactions(tmp_path, every):
    straight = _actor(tmp_path / "a" / "snap.npz", snapshot_every=every)
    _drive(straight, 0, 30)
    first = _actor(tmp_path / "b" / "snap.npz", snapshot_every=every)
    _drive(first, 0, 15)  # 15 x 12 ids > N/4: several compactions
    with np.load(tmp_path / "b" / "snap.npz") as raw:  # the file itself holds no O(N) array ...
        assert "sample_counts" not in raw.files
    # ... and reads back whole, counts rebuilt from the journal
    _same(first.state_dict(), load_state(str(tmp_path / "b" / "snap.npz")))
    assert len(journal_files(str(tmp_path / "b" / "snap.npz"))) == 2  # one base + one log, older ones dropped
    del first
    restarted = _actor(tmp_path / "b" / "snap.npz", snapshot_every=every)
    done = restarted.core.num_updates  # the last snapshot (a multiple of snapshot_every)
    assert done == 15 - 15 % every
    _drive(restarted, done, 30 - done)
    _same(straight.state_dict(), restarted.state_dict())


def test_crash_between_journal_append_and_snapshot_then_retry_counts_once(tmp_path):
    path = tmp_path / "snap.npz"
    straight = _actor(tmp_path / "s.npz")
    _drive(straight, 0, 6)
    actor = _actor(path)
    _drive(actor, 0, 5)
    ids = actor.select(12, select_index=5)
    # the update reached the journal but the actor died before writing its snapshot
    actor.journal.append(5, np.unique(ids))
    restarted = _actor(path)
    assert restarted.core.num_updates == 5
    again = restarted.select(12, select_index=5)  # the client's retry gets the same ids
    np.testing.assert_array_equal(again, ids)
    restarted.update(again, _rates(again, 5), update_index=5)
    _same(straight.state_dict(), restarted.state_dict())
    _same(restarted.state_dict(), _actor(path).state_dict())


def test_fresh_start_drops_journals_of_an_earlier_run_and_load_starts_a_new_journal(tmp_path):
    path = tmp_path / "snap.npz"
    actor = _actor(path)
    _drive(actor, 0, 3)
    full = actor.state_dict()
    os.remove(path)  # what the trainer does for a run without checkpoint
    fresh = _actor(path)
    assert journal_files(str(path)) == [] and fresh.core.num_updates == 0
    fresh.load_state_dict(full)  # resume from a checkpoint: snapshot + a new journal describe it
    assert len(journal_files(str(path))) == 2
    _same(full, _actor(path).state_dict())


def test_uint16_widening_and_sparse_dense_bases_round_trip(tmp_path):
    prefix = str(tmp_path / "snap.npz")
    for counts in (np.zeros(50, np.uint16), np.arange(50, dtype=np.uint16), np.full(50, 65535, np.uint16)):
        j = CountJournal.start(prefix, counts, 7)
        j.append(7, np.array([1, 2]))
        j.append(8, np.array([2]))
        j.append(9, np.array([3]))  # beyond the snapshot's update count: not applied
        got = CountJournal(prefix, j.jid).counts(9, 50)
        want = counts.astype(np.int64)
        np.add.at(want, [1, 2, 2], 1)
        assert got.tolist() == want.tolist()
        assert got.dtype == (np.int64 if want.max() > 65535 else np.uint16)
        j.remove()


def test_missing_or_torn_journal(tmp_path):
    prefix = str(tmp_path / "snap.npz")
    j = CountJournal.start(prefix, np.zeros(10, np.uint16), 0)
    j.append(0, np.array([4, 5]))
    with open(j.log_path, "ab") as f:  # a torn record: header of 3 ids, one id written
        f.write(np.array([1, 3, 6], np.int64).tobytes())
    assert CountJournal(prefix, j.jid).counts(1, 10).tolist() == [0, 0, 0, 0, 1, 1, 0, 0, 0, 0]
    with pytest.raises(CountJournalError, match="lacks updates"):
        CountJournal(prefix, j.jid).counts(2, 10)
    with pytest.raises(CountJournalError, match="prompts"):
        CountJournal(prefix, j.jid).counts(1, 11)
    j.remove()
    with pytest.raises(CountJournalError, match="missing"):
        CountJournal(prefix, j.jid).counts(1, 10)
