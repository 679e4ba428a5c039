import json

import numpy as np
import pytest

from rpo_verl.utils.atomic_files import atomic_write, atomic_write_json, atomic_write_npz


def test_npz_and_json_round_trip_into_new_folders(tmp_path):
    npz = tmp_path / "a" / "state.npz"
    atomic_write_npz(str(npz), {"x": np.arange(5, dtype=np.int32)})
    with np.load(npz) as data:
        np.testing.assert_array_equal(data["x"], np.arange(5))
    atomic_write_json(str(tmp_path / "b" / "p.json"), {"k": 1}, sort_keys=True)
    assert json.loads((tmp_path / "b" / "p.json").read_text()) == {"k": 1}


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "state.npz"
    atomic_write_npz(str(target), {"x": np.ones(3)})
    before = target.read_bytes()

    def broken(handle):
        handle.write(b"half a file")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(str(target), broken)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["state.npz"]
