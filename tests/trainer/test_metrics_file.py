"""Metrics-file rotation: a resumed run keeps the history, a fresh run sets the old one aside."""

from rpo_verl.trainer.metrics_file import prepare, read_records, run_files


def _write(path, *steps):
    path.write_text("".join(f'{{"step": {s}, "data": {{"x": {s}}}}}\n' for s in steps))


def test_resume_keeps_previous_segments_in_order(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert prepare(str(path), resuming=True) == str(path) and run_files(str(path)) == []
    _write(path, 1, 2)
    prepare(str(path), resuming=True)
    assert not path.exists() and (tmp_path / "metrics.1.jsonl").exists()
    _write(path, 3)
    prepare(str(path), resuming=True)
    _write(path, 4)
    files = run_files(str(path))
    assert [f.rsplit("/", 1)[1] for f in files] == ["metrics.1.jsonl", "metrics.2.jsonl", "metrics.jsonl"]
    assert [step for step, _ in read_records(files)] == [1, 2, 3, 4]


def test_fresh_run_moves_old_files_aside(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write(tmp_path / "metrics.1.jsonl", 1)
    _write(path, 2)
    prepare(str(path), resuming=False)
    assert run_files(str(path)) == []
    (backup,) = tmp_path.glob("superseded-*")
    assert sorted(p.name for p in backup.iterdir()) == ["metrics.1.jsonl", "metrics.jsonl"]


def test_truncated_last_line_is_ignored(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "data": {"a": 1}}\n{"step": 2, "da')
    assert read_records([str(path)]) == [(1, {"a": 1})]
