import importlib.util
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from rpo_verl.viz import load_run, plot_runs
from rpo_verl.viz import plots as P
from rpo_verl.viz.plots import PlotReport

ROOT = Path(__file__).resolve().parents[2]


def assert_png(path: Path, min_bytes=5_000):
    assert path.is_file(), path
    assert path.stat().st_size > min_bytes, f"{path} is only {path.stat().st_size} bytes"
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.verify()
    with Image.open(path) as im:
        w, h = im.size
        assert w >= 300 and h >= 150
        # Not a blank canvas: many distinct colours were drawn.
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 20


def test_single_run_writes_core_figures(tmp_path, grpo_jsonl):
    report = plot_runs({"grpo": grpo_jsonl}, tmp_path / "plots")
    names = sorted(p.name for p in report.files)
    assert names == ["reward.png", "timing.png", "tokens.png"]  # no rpo/dps/r2vpo metrics logged
    for p in report.files:
        assert_png(p)
    assert report.notes == []


def test_overlay_of_two_runs_and_diagnostics(tmp_path, grpo_jsonl, rpo_jsonl):
    runs = {"grpo": load_run(grpo_jsonl), "rpo": load_run(rpo_jsonl)}
    report = plot_runs(runs, tmp_path / "cmp", smooth=3, dpi=60)  # low dpi: faster on CI
    names = sorted(p.name for p in report.files)
    assert names == ["dps.png", "eff.png", "r2vpo.png", "reward.png", "rpo.png", "timing.png", "tokens.png"]
    for p in report.files:
        assert_png(p)

    # Both runs are drawn, one colour each, in every comparison panel.
    fig = P.plot_reward(runs, PlotReport())
    train_ax, val_ax = fig.axes[:2]
    assert [t.get_text() for t in train_ax.get_legend().get_texts()] == ["grpo", "rpo"]
    val_labels = [t.get_text() for t in val_ax.get_legend().get_texts()]
    assert "grpo: synth acc mean@1" in val_labels and "rpo: other acc mean@1" in val_labels

    fig = P.plot_tokens(runs, PlotReport())
    tok_ax, eff_ax = fig.axes[:2]
    labels = [line.get_label() for line in tok_ax.lines]
    assert labels[0].startswith("grpo (perf/total_num_tokens")
    assert "rpo (cumsum of eff/generated_tokens)" in labels and "rpo full-path equivalent" in labels
    rpo_line = next(line for line in tok_ax.lines if line.get_label().startswith("rpo (cumsum"))
    grpo_line = tok_ax.lines[0]
    assert rpo_line.get_ydata()[-1] < 0.2 * grpo_line.get_ydata()[-1]  # RPO's ~10x fewer tokens show
    assert [line.get_label() for line in eff_ax.lines] == ["grpo", "rpo"]
    # Validation before training sits at 0 generated tokens.
    assert eff_ax.lines[0].get_xdata()[0] == 0.0

    fig = P.plot_timing(runs, PlotReport())
    assert len(fig.axes) == 3  # one stacked panel per run + the comparison bars
    bar_labels = [t.get_text() for t in fig.axes[-1].get_xticklabels()]
    assert "rpo_prefix" in bar_labels and "gen" in bar_labels

    fig = P.plot_diagnostics(runs, "r2vpo", PlotReport())
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["r2vpo/lambda", "r2vpo/ratio_var/fresh"]


def test_missing_metrics_handled_gracefully(tmp_path):
    only_reward = pd.DataFrame({"critic/score/mean": [0.1, 0.2, 0.4]}, index=[1, 2, 3])
    report = plot_runs({"bare": only_reward}, tmp_path / "bare", dpi=60)
    assert [p.name for p in report.files] == ["reward.png"]
    assert_png(report.files[0], min_bytes=3_000)
    joined = "\n".join(report.notes)
    assert "no validation metrics" in joined
    assert "run 'bare' has no generated-token metrics" in joined
    assert "timing.png: no timing_s/*" in joined

    nothing = pd.DataFrame({"foo/bar": [1.0]}, index=[1])
    report = plot_runs({"x": nothing}, tmp_path / "none")
    assert report.files == []
    assert len(report.notes) == 3

    with pytest.raises(ValueError, match="smooth"):
        plot_runs({"x": nothing}, tmp_path, smooth=0)


def test_many_diagnostics_are_capped_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "MAX_DIAGNOSTIC_PANELS", 4)
    df = pd.DataFrame({f"dps/m{i:02d}": [float(i), float(i + 1)] for i in range(6)}, index=[1, 2])
    fig = P.plot_diagnostics({"d": df}, "dps", report := PlotReport())
    assert [ax.get_title() for ax in fig.axes] == ["dps/m00", "dps/m01", "dps/m02", "dps/m03"]
    assert any("6 metrics, first 4 drawn" in n and "dps/m04, dps/m05" in n for n in report.notes)


def _load_cli():
    spec = importlib.util.spec_from_file_location("plot_metrics_cli", ROOT / "scripts" / "plot_metrics.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli_script_overlays_two_runs(tmp_path, grpo_jsonl, rpo_jsonl):
    out = tmp_path / "cli"
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "plot_metrics.py"),
         "--run", f"grpo={grpo_jsonl}", "--run", f"rpo={rpo_jsonl}", "--out", str(out), "--dpi", "60"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert "wrote 7 figure(s)" in res.stdout
    for name in ("reward", "tokens", "timing", "rpo", "dps", "r2vpo", "eff"):
        assert_png(out / f"{name}.png")


def test_cli_errors(tmp_path, grpo_jsonl, capsys):
    cli = _load_cli()
    out = str(tmp_path / "o")
    assert cli.main([str(tmp_path / "missing.jsonl"), "--out", out]) == 1
    assert "missing.jsonl: no such file" in capsys.readouterr().err
    for argv, msg in (
        (["--run", "nameonly", "--out", out], "NAME=PATH"),
        ([str(grpo_jsonl), f"--run=grpo={grpo_jsonl}", "--out", out], "given twice"),
        (["--out", out], "at least one run"),
    ):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2
        assert msg in capsys.readouterr().err
    nothing = tmp_path / "nothing.jsonl"
    nothing.write_text('{"step": 1, "data": {"foo/bar": 1.0}}\n')
    assert cli.main([str(nothing), "--out", out]) == 1
    err = capsys.readouterr().err
    assert "nothing to plot" in err and "note: timing.png" in err
