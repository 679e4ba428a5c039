"""PNG figures from one or several runs' metrics (matplotlib's Agg canvas; no display needed).

Figures, each written only when some run has the metrics for it:
  reward.png       training reward (critic/score/mean) and validation accuracy (val-core/…) per step
  tokens.png       cumulative generated rollout tokens per step (full-path equivalent dashed when
                   logged), and validation accuracy (else training reward) against those tokens
  timing.png       step time by phase (timing_s/*), one row per run, plus mean seconds per phase
  <ns>.png         every rpo/…, dps/…, r2vpo/…, eff/… diagnostic, one panel per metric
Several runs are drawn in one figure each, one colour per run, for comparison.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rpo_verl.viz import metrics as M

MAX_DIAGNOSTIC_PANELS = 32
_LINESTYLES = ("-", "--", ":", "-.")


@dataclass
class PlotReport:
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be drawn, and why


def _colour(i: int) -> str:
    return f"C{i % 10}"


def _smooth(s: pd.Series, window: int) -> pd.Series:
    return s.rolling(window, min_periods=1).mean() if window > 1 else s


def _new_figure(nrows: int, ncols: int, width: float, height: float):
    fig = Figure(figsize=(max(width * ncols, 6.0), height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _mean_validation(df: pd.DataFrame) -> pd.Series | None:
    val = M.validation_accuracy(df)
    if not val:
        return None
    return pd.concat(val.values(), axis=1).mean(axis=1)


def plot_reward(runs: Mapping[str, pd.DataFrame], report: PlotReport, smooth: int = 1) -> Figure | None:
    fig, axes = _new_figure(1, 2, 6.0, 4.0)
    ax_train, ax_val = axes[0]
    any_train = any_val = False
    for i, (name, df) in enumerate(runs.items()):
        reward = M.train_reward(df)
        if reward is not None:
            any_train = True
            if smooth > 1:
                ax_train.plot(reward.index, reward.values, color=_colour(i), alpha=0.25, lw=1)
            ax_train.plot(reward.index, _smooth(reward, smooth).values, color=_colour(i), label=name)
        for j, (label, series) in enumerate(M.validation_accuracy(df).items()):
            any_val = True
            ax_val.plot(
                series.index, series.values, _LINESTYLES[j % 4], marker="o", ms=3, color=_colour(i),
                label=f"{name}: {label}",
            )
    if not any_train and not any_val:
        report.notes.append("reward.png: no run logged critic/score/mean, critic/rewards/mean or val-core/* metrics")
        return None
    for ax, has, title, ylabel in (
        (ax_train, any_train, "Training reward (critic/score/mean)", "mean reward"),
        (ax_val, any_val, "Validation (val-core/<source>/acc/mean@n)", "accuracy"),
    ):
        if has:
            ax.set_title(title)
            ax.set_xlabel("training step")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        else:
            _empty(ax, f"{title}\nnot logged")
    if not any_val:
        report.notes.append("reward.png: no validation metrics (val-core/*) in any run")
    return fig


def plot_tokens(runs: Mapping[str, pd.DataFrame], report: PlotReport, batch_size: int | None = None) -> Figure | None:
    fig, axes = _new_figure(1, 2, 6.0, 4.0)
    ax_tok, ax_eff = axes[0]
    drawn = False
    y_is_val = any(_mean_validation(df) is not None for df in runs.values())
    for i, (name, df) in enumerate(runs.items()):
        found = M.cumulative_generated_tokens(df, batch_size)
        if found is None:
            report.notes.append(
                f"tokens.png: run '{name}' has no generated-token metrics (eff/…, rpo/…, or perf/total_num_tokens "
                "with response_length/mean and prompt_length/mean; or pass --batch-size)"
            )
            continue
        drawn = True
        cum, source = found
        ax_tok.plot(cum.index, cum.values, color=_colour(i), label=f"{name} ({source})")
        full = M.cumulative_full_path_tokens(df)
        if full is not None:
            ax_tok.plot(full[0].index, full[0].values, "--", color=_colour(i), label=f"{name} full-path equivalent")
        y = _mean_validation(df) if y_is_val else M.train_reward(df)
        if y is not None and len(y):
            x = cum.reindex(cum.index.union(y.index)).ffill().fillna(0.0).reindex(y.index)
            ax_eff.plot(x.values, y.values, "o-" if y_is_val else "-", ms=3, color=_colour(i), label=name)
    if not drawn:
        return None
    ax_tok.set_title("Generated rollout tokens (cumulative)")
    ax_tok.set_xlabel("training step")
    ax_tok.set_ylabel("tokens")
    ax_tok.grid(alpha=0.3)
    ax_tok.legend(fontsize=7)
    if ax_eff.lines:
        ax_eff.set_title(("Validation accuracy" if y_is_val else "Training reward") + " vs generated tokens")
        ax_eff.set_xlabel("cumulative generated tokens")
        ax_eff.set_ylabel("accuracy (mean over sources)" if y_is_val else "mean reward")
        ax_eff.grid(alpha=0.3)
        ax_eff.legend(fontsize=7)
    else:
        _empty(ax_eff, "no reward or validation metrics")
    return fig


def plot_timing(runs: Mapping[str, pd.DataFrame], report: PlotReport) -> Figure | None:
    breakdowns = {name: M.step_time_breakdown(df) for name, df in runs.items()}
    breakdowns = {k: v for k, v in breakdowns.items() if v is not None}
    if not breakdowns:
        report.notes.append("timing.png: no timing_s/* metrics in any run")
        return None
    phases = list(dict.fromkeys(p for b in breakdowns.values() for p in b.columns))
    colours = {p: f"C{j % 10}" for j, p in enumerate(phases)}
    fig, axes = _new_figure(len(breakdowns) + 1, 1, 9.0, 3.0)
    for ax, (name, b) in zip(axes[:-1, 0], breakdowns.items()):
        ax.stackplot(b.index, [b[p].values for p in b.columns], labels=list(b.columns),
                     colors=[colours[p] for p in b.columns], alpha=0.85)
        ax.set_title(f"{name}: seconds per step by phase (timing_s/*)")
        ax.set_xlabel("training step")
        ax.set_ylabel("seconds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=4, loc="upper left")
    # Mean seconds per phase, every timing_s/* key (plugin timers included), grouped by run.
    ax = axes[-1, 0]
    keys = sorted({c for df in runs.values() for c in M.timing_columns(df)})
    width = 0.8 / max(len(runs), 1)
    for i, (name, df) in enumerate(runs.items()):
        means = [df[k].mean() if k in df else 0.0 for k in keys]
        ax.bar([j + i * width for j in range(len(keys))], means, width, color=_colour(i), label=name)
    ax.set_xticks([j + width * (len(runs) - 1) / 2 for j in range(len(keys))])
    ax.set_xticklabels([k.removeprefix("timing_s/") for k in keys], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("mean seconds (steps where timed)")
    ax.set_title("Mean time per phase")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    return fig


def plot_diagnostics(
    runs: Mapping[str, pd.DataFrame], namespace: str, report: PlotReport, smooth: int = 1
) -> Figure | None:
    keys = sorted({k for df in runs.values() for k in M.diagnostics(df, namespace)})
    if not keys:
        return None
    if len(keys) > MAX_DIAGNOSTIC_PANELS:
        report.notes.append(
            f"{namespace}.png: {len(keys)} metrics, first {MAX_DIAGNOSTIC_PANELS} drawn; left out: "
            + ", ".join(keys[MAX_DIAGNOSTIC_PANELS:])
        )
        keys = keys[:MAX_DIAGNOSTIC_PANELS]
    ncols = min(4, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = _new_figure(nrows, ncols, 3.6, 2.6)
    for ax, key in zip(axes.flat, keys):
        for i, (name, df) in enumerate(runs.items()):
            if key in df:
                s = df[key].dropna()
                ax.plot(s.index, _smooth(s, smooth).values, color=_colour(i), label=name, lw=1.2)
        ax.set_title(key, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{namespace}/… diagnostics (x: training step)")
    return fig


def plot_runs(
    runs: Mapping[str, pd.DataFrame | str | Path],
    out_dir: str | Path,
    *,
    batch_size: int | None = None,
    smooth: int = 1,
    dpi: int = 110,
) -> PlotReport:
    """Write every figure that the runs' metrics allow into ``out_dir``.

    ``runs``: name -> a loaded DataFrame (:func:`rpo_verl.viz.metrics.load_run`) or a path to load.
    ``batch_size``: responses per step, used only when no token-count metric is logged.
    ``smooth``: rolling-mean window over steps for training reward and diagnostics (1 = off).
    Returns the written files and notes on figures that could not be drawn.
    """
    if not runs:
        raise ValueError("plot_runs: no runs given")
    if smooth < 1:
        raise ValueError(f"smooth: must be >= 1, got {smooth}")
    frames = {name: df if isinstance(df, pd.DataFrame) else M.load_run(df) for name, df in runs.items()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = PlotReport()
    figures = {
        "reward": plot_reward(frames, report, smooth),
        "tokens": plot_tokens(frames, report, batch_size),
        "timing": plot_timing(frames, report),
    }
    for ns in M.DIAGNOSTIC_NAMESPACES:
        figures[ns] = plot_diagnostics(frames, ns, report, smooth)
    for stem, fig in figures.items():
        if fig is not None:
            path = out / f"{stem}.png"
            fig.savefig(path, dpi=dpi)
            report.files.append(path)
    return report
