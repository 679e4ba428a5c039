"""Figures from verl training logs: load a run's metrics (verl's file or tensorboard logger) and
plot reward/validation, generated tokens, step time and the plugin's diagnostics for one or
several runs. The command-line front end is scripts/plot_metrics.py."""

from rpo_verl.viz.metrics import MetricsError, load_run
from rpo_verl.viz.plots import PlotReport, plot_runs

__all__ = ["MetricsError", "PlotReport", "load_run", "plot_runs"]
