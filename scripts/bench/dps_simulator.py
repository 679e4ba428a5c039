#!/usr/bin/env python
"""Model-free simulator: dps vs mopps vs uniform vs uniform + DAPO dynamic sampling.

  python scripts/bench/dps_simulator.py --out-dir outputs/bench/dps_sim

Drift model (stated, not fitted to favour any method):
- N prompts; prompt i has a latent logit z_i and solve rate p_i = sigmoid(z_i); z_i(0) ~ Normal(m0, s0).
  m0, s0 are set so that uniform sampling sees a partially-solved share in the range the DPS paper
  reports for uniform sampling (0.3-0.5) at the start.
- A rolled-out prompt yields k Bernoulli(p_i) rollouts; its observed success rate is their mean.
- Training: only a partially solved group carries a GRPO learning signal. Each such group in the
  training batch raises its own prompt's logit by eta ("accumulated training on it") and every
  prompt's logit by tau (transfer/generalisation); groups that are all right or all wrong change
  nothing. A step trains on at most B groups.
- Methods: ``uniform`` (B prompts per step from shuffled epochs), ``dps`` and ``mopps`` (B prompts
  per step chosen by the rpo_verl scheduler before rollout), ``uniform+dapo_ds`` (rounds of B
  uniform prompts until B partially solved groups are collected, surplus discarded, as verl's
  ``algorithm.filter_groups`` with ``max_num_gen_batches=0``), ``dps+dapo_ds`` (the same rounds,
  each selected by DPS excluding prompts already in the step), ``oracle`` (top-B by the true
  probability of a partially solved group, 1 - p^k - (1-p)^k: the ceiling of any pre-rollout
  selector in this world).
- Rollouts counted: every generated rollout, filtered or not.
- Settings: DPS uses the paper's λ = 0.7 and the whole dataset as candidates; MoPPS gets
  λ = 1.0 and a pool of 4 × B, its best of λ ∈ {0.7, 0.9, 0.95, 1} × pool ∈ {4, 16} here.
  eta = 0.1 logit per effective exposure (a prompt at p = 0.5 needs ~22 to reach p = 0.9: slow
  per-prompt learning, as with RL fine-tuning at lr ~1e-6); transfer = 1 (each effective group
  spreads as much logit gain over the whole dataset as it gives its own prompt). ``--sweep-eta``
  repeats the comparison for other eta, because the effective ratio any selector can reach depends
  on how long a prompt stays partially solved.
- State persistence: with ``--switch-rate r`` every prompt, independently with probability r per
  step, forgets its history: its logit is redrawn from Normal(m0, s0) (same draws for every method
  of a seed). r = 0 is the world above; at r = 1 a prompt's past says nothing about its next state.
  ``--sweep-switch`` runs uniform / mopps / dps / oracle for ``--sweep-steps`` steps per r (no
  early stop: with r > 0 the target may never be reached) and reports DPS's effective ratio as a
  fraction of the oracle's, seed by seed.
Reported per method (mean over seeds): effective prompt ratio per step (partially solved share
of the groups generated that step), rollouts spent until a --target share of prompts has
p_i >= --solved-threshold, and the ratio of that to uniform+dapo_ds.
Writes ``dps_simulator.json`` and ``dps_simulator.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rpo_verl.dps.config import DPSConfig
from rpo_verl.dps.core import SchedulerCore

METHODS = ("uniform", "dps", "mopps", "uniform+dapo_ds", "dps+dapo_ds", "oracle")


@dataclass
class SimConfig:
    num_prompts: int = 2048
    batch: int = 64
    k: int = 8
    m0: float = -1.0
    s0: float = 4.5
    eta: float = 0.1
    transfer: float = 1.0
    target: float = 0.6
    solved_threshold: float = 0.9
    max_steps: int = 4000
    decay: float = 0.7
    pool_ratio: float | None = None
    mopps_pool_ratio: float = 4.0
    mopps_decay: float = 1.0
    switch_rate: float = 0.0


class World:
    def __init__(self, cfg: SimConfig, seed: int):
        self.cfg = cfg
        self.rng = np.random.default_rng([seed, 12345])
        self.z = self.rng.normal(cfg.m0, cfg.s0, cfg.num_prompts)
        self.switch_rng = np.random.default_rng([seed, 777])

    def switch(self) -> None:
        """Each prompt forgets its state with probability ``switch_rate`` (logit redrawn from the start law)."""
        if self.cfg.switch_rate > 0:
            hit = self.switch_rng.random(self.cfg.num_prompts) < self.cfg.switch_rate
            fresh = self.switch_rng.normal(self.cfg.m0, self.cfg.s0, self.cfg.num_prompts)
            self.z = np.where(hit, fresh, self.z)

    def p_partial(self, ids=None) -> np.ndarray:
        """True probability that a group of k rollouts has mixed outcomes."""
        p = self.p(ids)
        return 1 - p**self.cfg.k - (1 - p) ** self.cfg.k

    def p(self, ids=None) -> np.ndarray:
        z = self.z if ids is None else self.z[ids]
        return 1.0 / (1.0 + np.exp(-z))

    def rollout(self, ids: np.ndarray) -> np.ndarray:
        """Observed success rate of k rollouts per prompt ``[B]``."""
        return self.rng.binomial(self.cfg.k, self.p(ids)) / self.cfg.k

    def train(self, ids: np.ndarray) -> None:
        """GRPO step on the partially solved groups of ``ids``."""
        self.z[ids] += self.cfg.eta
        self.z += self.cfg.transfer * self.cfg.eta / self.cfg.num_prompts * ids.size

    def solved_share(self) -> float:
        return float((self.p() >= self.cfg.solved_threshold).mean())


def partial(rates: np.ndarray) -> np.ndarray:
    return (rates > 0) & (rates < 1)


def run(method: str, cfg: SimConfig, seed: int, stop_at_target: bool = True) -> dict:
    world = World(cfg, seed)
    selector = "dps" if method.startswith("dps") else "mopps" if method == "mopps" else "uniform"
    pool = cfg.mopps_pool_ratio if selector == "mopps" else cfg.pool_ratio
    decay = cfg.mopps_decay if selector == "mopps" else cfg.decay
    sched = SchedulerCore(DPSConfig(enable=True, selector=selector, decay=decay, pool_ratio=pool, seed=seed),
                          cfg.num_prompts, rollouts_per_prompt=cfg.k)
    dapo = method.endswith("dapo_ds")
    rollouts, eff, solved, cum = 0, [], [world.solved_share()], [0]
    pred = {"dps/pred_accuracy": [], "dps/partial_precision": [], "dps/partial_recall": []}
    reached = None
    # Where DPS's batch comes from: prompts at the prior (never seen or settled back) vs predicted ones,
    # and the true P(partial) of what a selector picked relative to the oracle's top-B.
    fresh = {"share": [], "eff": [], "eff_pred": []}
    picked_vs_oracle = []
    for step in range(cfg.max_steps):
        generated, n_partial, kept = 0, 0, []
        taken = np.zeros(0, np.int64)
        while True:
            true_pp = world.p_partial()
            if method == "oracle":
                ids = np.argsort(-true_pp, kind="stable")[: cfg.batch]
            else:
                ids = sched.select(cfg.batch, exclude=taken if dapo else None)
            picked_vs_oracle.append(true_pp[ids].mean() / -np.partition(-true_pp, ids.size - 1)[: ids.size].mean())
            at_prior = None
            if selector == "dps":
                at_prior = np.all(np.abs(sched.selector.predict(ids) - 1 / 3) < 1e-9, axis=1)
            rates = world.rollout(ids)
            if at_prior is not None:
                fresh["share"].append(at_prior.mean())
                if at_prior.any():
                    fresh["eff"].append(partial(rates[at_prior]).mean())
                if not at_prior.all():
                    fresh["eff_pred"].append(partial(rates[~at_prior]).mean())
            m = sched.update(ids, rates)
            for key in pred:
                if key in m:
                    pred[key].append(m[key])
            generated += ids.size
            kept.append(ids[partial(rates)])
            n_partial += kept[-1].size
            taken = np.concatenate([taken, ids])
            if not dapo or sum(map(len, kept)) >= cfg.batch or taken.size + cfg.batch > cfg.num_prompts:
                break
        kept = np.concatenate(kept)[: cfg.batch]
        rollouts += generated * cfg.k
        eff.append(n_partial / generated)
        world.train(kept)
        world.switch()
        solved.append(world.solved_share())
        cum.append(rollouts)
        if reached is None and solved[-1] >= cfg.target:
            reached = {"step": step + 1, "rollouts": rollouts}
            if stop_at_target:
                break
    diag = {"picked_true_p_partial_vs_oracle": float(np.mean(picked_vs_oracle))}
    if fresh["share"]:
        diag |= {"batch_share_at_prior": float(np.mean(fresh["share"])),
                 "effective_ratio_at_prior": float(np.mean(fresh["eff"])) if fresh["eff"] else None,
                 "effective_ratio_predicted": float(np.mean(fresh["eff_pred"])) if fresh["eff_pred"] else None}
    return {"effective_ratio": eff, "solved_share": solved, "cum_rollouts": cum, "reached": reached,
            "prediction": {k.split("/")[1]: float(np.mean(v)) for k, v in pred.items() if v}, "diagnostics": diag}


def spread(values) -> dict:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max())}


def summarize(runs: list[dict]) -> dict:
    reached = [r["reached"] for r in runs]
    ok = [r for r in reached if r is not None]
    diag = {k: [r["diagnostics"][k] for r in runs] for k in runs[0]["diagnostics"]}
    return {
        "effective_ratio_mean": float(np.mean([np.mean(r["effective_ratio"]) for r in runs])),
        "effective_ratio_per_seed": [float(np.mean(r["effective_ratio"])) for r in runs],
        "effective_ratio_first_20_steps": float(np.mean([np.mean(r["effective_ratio"][:20]) for r in runs])),
        "reached_target": f"{len(ok)}/{len(runs)}",
        "rollouts_to_target_mean": float(np.mean([r["rollouts"] for r in ok])) if ok else None,
        "rollouts_to_target_std": float(np.std([r["rollouts"] for r in ok])) if ok else None,
        "steps_to_target_mean": float(np.mean([r["step"] for r in ok])) if ok else None,
        "hmm_prediction": {k: float(np.mean([r["prediction"][k] for r in runs])) for k in runs[0]["prediction"]},
        "diagnostics": {k: float(np.mean(v)) for k, v in diag.items() if None not in v},
    }


def add_oracle_ratio(summary: dict) -> None:
    """Each method's effective ratio as a fraction of the oracle's, seed by seed (same world and seed)."""
    if "oracle" not in summary:
        return
    ref = summary["oracle"]["effective_ratio_per_seed"]
    for v in summary.values():
        v["effective_ratio_vs_oracle"] = spread(np.divide(v["effective_ratio_per_seed"], ref))


def sweep_switch(cfg: SimConfig, rates: list[float], steps: int, seeds: int, methods: list[str]) -> dict:
    """Fixed-horizon runs per switch rate (no early stop), effective ratio relative to the oracle."""
    out = {}
    for r in rates:
        c = SimConfig(**{**asdict(cfg), "switch_rate": r, "max_steps": steps})
        summ = {m: summarize([run(m, c, seed, stop_at_target=False) for seed in range(seeds)]) for m in methods}
        for v in summ.values():
            v.pop("reached_target"), v.pop("rollouts_to_target_mean"), v.pop("rollouts_to_target_std")
            v.pop("steps_to_target_mean")
        add_oracle_ratio(summ)
        out[str(r)] = summ
        print(f"switch_rate={r}:", {m: (round(v["effective_ratio_mean"], 3),
                                        round(v.get("effective_ratio_vs_oracle", {}).get("mean", float("nan")), 3))
                                    for m, v in summ.items()}, flush=True)
    return out


def plot(results: dict, cfg: SimConfig, path: Path, switch: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3 if switch else 2, figsize=(16 if switch else 11, 4))
    for method, res in results.items():
        run0 = res["runs"][0]
        eff = np.convolve(run0["effective_ratio"], np.ones(5) / 5, mode="valid")
        color = f"C{METHODS.index(method)}"
        axes[0].plot(np.arange(eff.size) + 1, eff, label=method, color=color)
        axes[1].plot(np.asarray(run0["cum_rollouts"]) / 1e3, run0["solved_share"], label=method, color=color)
    axes[0].set_xlabel("training step")
    axes[0].set_ylabel("effective prompt ratio (5-step mean)")
    axes[0].set_ylim(0, 1.02)
    axes[1].axhline(cfg.target, ls="--", color="k", lw=1)
    axes[1].set_xlabel("rollouts spent (thousands)")
    axes[1].set_ylabel(f"share of prompts with p >= {cfg.solved_threshold}")
    if switch:
        rates = [float(r) for r in switch]
        x = [max(r, 1e-3) for r in rates]
        for m in next(iter(switch.values())):
            eff = [switch[r][m]["effective_ratio_per_seed"] for r in switch]
            axes[2].errorbar(x, np.mean(eff, axis=1), yerr=np.std(eff, axis=1), marker="o", capsize=3, label=m,
                             color=f"C{METHODS.index(m)}")
        ratio = [switch[r]["dps"]["effective_ratio_vs_oracle"] for r in switch if "dps" in switch[r]]
        if ratio:
            axes[2].plot(x, [q["mean"] for q in ratio], "k--", marker="s", label="dps / oracle")
            axes[2].axhline(0.9, color="gray", lw=0.8, ls=":")
        axes[2].set_xscale("log")
        axes[2].set_xlabel("switch rate per step (0 plotted at 1e-3)")
        axes[2].set_ylabel("effective prompt ratio (mean ± std over seeds)")
        axes[2].set_ylim(0, 1.02)
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"DPS simulator (N={cfg.num_prompts}, B={cfg.batch}, k={cfg.k}; seed 0 shown)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for field, default in asdict(SimConfig()).items():
        ap.add_argument(f"--{field.replace('_', '-')}", type=float if isinstance(default, float) or default is None
                        else int, default=default)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--sweep-eta", default="", help="comma-separated eta values to repeat the summary for")
    ap.add_argument("--sweep-switch", default="", help="comma-separated switch rates (fixed-horizon runs)")
    ap.add_argument("--sweep-steps", type=int, default=300, help="steps per run in --sweep-switch")
    ap.add_argument("--sweep-methods", default="uniform,mopps,dps,oracle")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out-dir", default="scripts/bench/results")
    ap.add_argument("--full-runs", action="store_true", help="also store every run's per-step curves in the JSON")
    args = ap.parse_args()
    logging.getLogger("rpo_verl.dps").setLevel(logging.ERROR)
    cfg = SimConfig(**{f: getattr(args, f) for f in asdict(SimConfig())})
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for method in args.methods.split(","):
        runs = [run(method, cfg, seed) for seed in range(args.seeds)]
        results[method] = {"summary": summarize(runs), "runs": runs}
        print(method, json.dumps(results[method]["summary"]), flush=True)
    base = results.get("uniform+dapo_ds", {}).get("summary", {}).get("rollouts_to_target_mean")
    for res in results.values():
        r = res["summary"]["rollouts_to_target_mean"]
        res["summary"]["rollouts_ratio_to_dapo_ds"] = r / base if (r and base) else None
    add_oracle_ratio({m: r["summary"] for m, r in results.items()})
    sweep = {}
    for eta in [float(e) for e in args.sweep_eta.split(",") if e]:
        c = SimConfig(**{**asdict(cfg), "eta": eta})
        summ = {m: summarize([run(m, c, seed) for seed in range(args.seeds)]) for m in args.methods.split(",")}
        base_eta = summ.get("uniform+dapo_ds", {}).get("rollouts_to_target_mean")
        for v in summ.values():
            r = v["rollouts_to_target_mean"]
            v["rollouts_ratio_to_dapo_ds"] = r / base_eta if (r and base_eta) else None
        sweep[str(eta)] = summ
        print(f"eta={eta}:", {m: (round(v["effective_ratio_mean"], 3), v["rollouts_ratio_to_dapo_ds"] and
                                  round(v["rollouts_ratio_to_dapo_ds"], 3)) for m, v in summ.items()}, flush=True)
    switch = sweep_switch(cfg, [float(r) for r in args.sweep_switch.split(",") if r], args.sweep_steps, args.seeds,
                          args.sweep_methods.split(","))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    report = {"config": asdict(cfg), "seeds": list(range(args.seeds)), "commit": commit,
              "machine": f"{platform.machine()}, {os.cpu_count()} cpus (shared)",
              "summary": {m: r["summary"] for m, r in results.items()}, "sweep_eta": sweep,
              "sweep_switch": {"steps": args.sweep_steps, "results": switch}}
    if args.full_runs:
        report["runs"] = {m: r["runs"] for m, r in results.items()}
    (out / "dps_simulator.json").write_text(json.dumps(report, indent=1))
    plot(results, cfg, out / "dps_simulator.png", switch)
    print(json.dumps(report["summary"], indent=1))
    print(f"wrote {out / 'dps_simulator.json'} and {out / 'dps_simulator.png'}")


if __name__ == "__main__":
    main()
