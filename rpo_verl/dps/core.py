"""The DPS scheduler without Ray: one selector plus the bookkeeping behind the ``dps/…`` metrics.

Call order per rollout round: ``select(B)`` before rollout, then ``update(ids, success_rates)``
after rewards (one filter time step). The success rate of a prompt is the raw task accuracy of its
group in [0, 1] (never the shaped reward); NaN leaves the prompt unobserved and is logged.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from rpo_verl.dps.config import DPSConfig
from rpo_verl.dps.hmm import PARTIAL, UNOBSERVED, observed_states
from rpo_verl.dps.selectors import make_selector

logger = logging.getLogger("rpo_verl.dps")

STATE_VERSION = 1
# Accuracies a hair outside [0, 1] (float noise) are clipped; anything further is a caller bug.
_RATE_SLACK = 1e-6


class SchedulerCore:
    def __init__(self, config: DPSConfig, num_prompts: int, rollouts_per_prompt: int = 1):
        if num_prompts < 1:
            raise ValueError(f"num_prompts: the train dataset is empty (got {num_prompts} prompts)")
        if rollouts_per_prompt < 1:
            raise ValueError(f"rollouts_per_prompt: must be >= 1, got {rollouts_per_prompt}")
        self.config = config
        self.num_prompts = int(num_prompts)
        self.rollouts_per_prompt = int(rollouts_per_prompt)
        self.selector = make_selector(
            config.selector, num_prompts, seed=config.seed, decay=config.decay, prior_alpha=config.prior_alpha,
            pool_ratio=config.pool_ratio, settle_tol=config.settle_tol,
        )
        self.num_updates = 0
        # Times each prompt was selected. uint16 (2 bytes a prompt: 0.19 GiB at 10^8 prompts), widened
        # to int64 in place of the old array the first time a count would pass 65535 (see _count).
        self.sample_counts = np.zeros(num_prompts, dtype=np.uint16)
        # count_hist[c] = number of prompts sampled c times: min/max/std of the counts in O(B) per step.
        self.count_hist = np.array([num_prompts], dtype=np.int64)
        self.count_sum = 0
        self.count_sumsq = 0
        self.rollouts_total = 0
        self.nan_total = 0
        self.num_selects = 0
        self.last_selected = np.zeros(0, np.int64)
        self.last_counted = np.zeros(0, np.int64)  # distinct ids the last update counted (for the journal)
        self.last_select_time = 0.0
        self.last_metrics: dict[str, float] = {}

    # --- selection -----------------------------------------------------------------------
    def select(self, batch_size: int, exclude=None, select_index: int | None = None) -> np.ndarray:
        """Prompt ids ``[batch_size]`` (distinct) to roll out next; ``exclude`` ids are never chosen.

        ``select_index``: optional 0-based count of this select; a repeat of the last one (a call
        retried after an actor restart) returns the same ids again, any other mismatch raises.
        """
        if select_index is not None:
            if select_index == self.num_selects - 1:
                return self.last_selected.copy()
            if select_index != self.num_selects:
                raise ValueError(f"DPS select_index {select_index} out of order: the scheduler has answered "
                                 f"{self.num_selects} selects")
        t0 = time.perf_counter()
        ids = self.selector.select(int(batch_size), exclude)
        self.last_select_time = time.perf_counter() - t0
        self.last_selected = ids
        self.num_selects += 1
        return ids

    # --- observation ----------------------------------------------------------------------
    def _clean(self, prompt_ids, success_rates, num_rollouts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
        rates = np.asarray(success_rates, dtype=np.float64).reshape(-1)
        if ids.shape != rates.shape:
            raise ValueError(f"prompt_ids ({ids.size}) and success_rates ({rates.size}) differ in length")
        if num_rollouts is None:
            num_rollouts = self.rollouts_per_prompt
        k = np.broadcast_to(np.asarray(num_rollouts, dtype=np.int64).reshape(-1), ids.shape).copy()
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_prompts):
            bad = ids[(ids < 0) | (ids >= self.num_prompts)][0]
            raise ValueError(
                f"prompt id {bad} is outside the train dataset [0, {self.num_prompts}): pass the dataset's row "
                f"index (extra_info.index / the sampler index), not the batch uid"
            )
        if (k < 1).any():
            raise ValueError("num_rollouts: every prompt must have >= 1 rollout")
        finite = np.isfinite(rates)
        if (~finite & ~np.isnan(rates)).any() or (rates[finite] < -_RATE_SLACK).any() or (
            rates[finite] > 1 + _RATE_SLACK
        ).any():
            bad = rates[~np.isnan(rates) & ((rates < -_RATE_SLACK) | (rates > 1 + _RATE_SLACK) | ~finite)][0]
            raise ValueError(
                f"success_rates must be the raw task accuracy of each group in [0, 1], got {bad}: pass the "
                f"group's mean accuracy, not the shaped reward"
            )
        rates = np.where(finite, np.clip(rates, 0.0, 1.0), rates)
        if np.unique(ids).size != ids.size:
            # A prompt reported twice in one round: pool its groups into one observation.
            uniq, inv = np.unique(ids, return_inverse=True)
            ok = ~np.isnan(rates)
            k_ok = np.bincount(inv, weights=k * ok, minlength=uniq.size)
            hits = np.bincount(inv, weights=np.where(ok, rates * k, 0.0), minlength=uniq.size)
            pooled = np.full(uniq.size, np.nan)
            np.divide(hits, k_ok, out=pooled, where=k_ok > 0)
            ids, rates, k = uniq, pooled, np.bincount(inv, weights=k, minlength=uniq.size).astype(np.int64)
        return ids, rates, k

    def update(self, prompt_ids, success_rates, num_rollouts=None, update_index: int | None = None) -> dict:
        """One filter time step with the groups of the prompts just rolled out.

        ``num_rollouts``: rollouts per prompt (int or ``[B]``; default ``rollouts_per_prompt``).
        ``update_index``: optional 0-based count of this update; a repeat of the last applied index
        (a retried call after an actor restart) is ignored, any other mismatch raises.
        Returns this step's metrics.
        """
        if update_index is not None:
            if update_index == self.num_updates - 1:
                logger.warning("DPS: update %d was already applied (retried call); ignoring it", update_index)
                return dict(self.last_metrics)
            if update_index != self.num_updates:
                raise ValueError(f"DPS update_index {update_index} out of order: the scheduler has applied "
                                 f"{self.num_updates} updates")
        t0 = time.perf_counter()
        ids, rates, k = self._clean(prompt_ids, success_rates, num_rollouts)
        states = observed_states(rates)
        prior = self.selector.predict(ids)
        self.selector.update(ids, rates, k)
        update_time = time.perf_counter() - t0
        self._count(ids)
        self.last_counted = ids
        self.num_updates += 1
        nan_ids = ids[states == UNOBSERVED]
        if nan_ids.size:
            self.nan_total += int(nan_ids.size)
            logger.warning("DPS: %d prompt(s) had no valid success rate (NaN) in update %d and stay unobserved: %s",
                           nan_ids.size, self.num_updates - 1, nan_ids[:20].tolist())
        self.rollouts_total += int(k.sum())
        self.last_metrics = self._metrics(ids, states, k, prior, update_time, int(nan_ids.size))
        return dict(self.last_metrics)

    def _count(self, ids: np.ndarray) -> None:
        old = self.sample_counts[ids].astype(np.int64)
        if old.size and int(old.max()) >= np.iinfo(self.sample_counts.dtype).max:
            self.sample_counts = self.sample_counts.astype(np.int64)  # once per run at most: O(N)
        self.sample_counts[ids] += 1
        top = int(old.max(initial=-1)) + 2
        if top > self.count_hist.size:
            self.count_hist = np.concatenate([self.count_hist, np.zeros(top - self.count_hist.size, np.int64)])
        np.subtract.at(self.count_hist, old, 1)
        np.add.at(self.count_hist, old + 1, 1)
        self.count_sum += int(ids.size)
        self.count_sumsq += int((2 * old + 1).sum())

    def _metrics(self, ids, states, k, prior, update_time, n_nan) -> dict[str, float]:
        seen = states != UNOBSERVED
        obs = states[seen]
        m: dict[str, float] = {
            "dps/step": float(self.num_updates),
            "dps/prompts_step": float(ids.size),
            "dps/observed_prompts_step": float(obs.size),
            "dps/nan_prompts_step": float(n_nan),
            "dps/nan_prompts_total": float(self.nan_total),
            "dps/rollouts_step": float(k.sum()),
            "dps/rollouts_total": float(self.rollouts_total),
            "dps/select_time_s": self.last_select_time,
            "dps/update_time_s": update_time,
            "dps/scheduler_time_s": self.last_select_time + update_time,
        }
        if obs.size:
            m["dps/effective_ratio"] = float((obs == PARTIAL).mean())
            m["dps/solved_ratio"] = float((obs == 2).mean())
            m["dps/unsolved_ratio"] = float((obs == 0).mean())
        if prior is not None:
            m["dps/selected_mu_partial_mean"] = float(prior[:, PARTIAL].mean()) if ids.size else float("nan")
            if obs.size:
                pred = np.argmax(prior[seen], axis=1)
                m["dps/pred_accuracy"] = float((pred == obs).mean())
                tp = float(((pred == PARTIAL) & (obs == PARTIAL)).sum())
                if (pred == PARTIAL).any():
                    m["dps/partial_precision"] = tp / float((pred == PARTIAL).sum())
                if (obs == PARTIAL).any():
                    m["dps/partial_recall"] = tp / float((obs == PARTIAL).sum())
        n = self.num_prompts
        mean = self.count_sum / n
        nz = np.flatnonzero(self.count_hist)
        m["dps/sample_count_mean"] = mean
        m["dps/sample_count_std"] = float(np.sqrt(max(self.count_sumsq / n - mean * mean, 0.0)))
        m["dps/sample_count_max"] = float(nz[-1])
        m["dps/sample_count_min"] = float(nz[0])
        m["dps/sampled_prompts_frac"] = float(1.0 - self.count_hist[0] / n)
        if self.config.selector == "dps":
            m["dps/active_prompts"] = float(self.selector.filter.active_ids.size)
        return m

    def metrics(self) -> dict[str, float]:
        """Metrics of the last update (empty before the first)."""
        return dict(self.last_metrics)

    # --- persistence ----------------------------------------------------------------------
    def state_dict(self, include_counts: bool = True) -> dict:
        """The whole state; ``include_counts=False`` leaves out ``sample_counts`` (the only O(N) array,
        persisted by ``count_journal`` in the actor's per-update snapshot) and is O(active prompts)."""
        state = {
            "version": STATE_VERSION,
            "selector_name": self.config.selector,
            "num_prompts": self.num_prompts,
            "num_updates": self.num_updates,
            "num_selects": self.num_selects,
            "last_selected": self.last_selected.copy(),
            "selector": self.selector.state_dict(),
            "count_hist": self.count_hist.copy(),
            "count_sum": self.count_sum,
            "count_sumsq": self.count_sumsq,
            "rollouts_total": self.rollouts_total,
            "nan_total": self.nan_total,
            "last_metrics": dict(self.last_metrics),
        }
        if include_counts:
            state["sample_counts"] = self.sample_counts.copy()
        return state

    def cursor_state(self) -> dict:
        """What ``select`` changed since the last update (small; see Selector.cursor_state)."""
        return {"num_updates": self.num_updates, "num_selects": self.num_selects,
                "last_selected": self.last_selected.copy(), "selector": self.selector.cursor_state()}

    def load_cursor_state(self, cursor: dict) -> bool:
        """Apply a cursor saved after the current update count; a stale one is ignored (False)."""
        if int(cursor["num_updates"]) != self.num_updates:
            return False
        self.selector.load_cursor_state(cursor["selector"])
        self.num_selects = int(cursor["num_selects"])
        self.last_selected = np.asarray(cursor["last_selected"], dtype=np.int64).copy()
        return True

    def load_state_dict(self, state: dict) -> None:
        if int(state.get("version", -1)) != STATE_VERSION:
            raise ValueError(f"DPS scheduler state has version {state.get('version')}, expected {STATE_VERSION}")
        if int(state["num_prompts"]) != self.num_prompts:
            raise ValueError(
                f"DPS scheduler state was saved for a train dataset of {int(state['num_prompts'])} prompts, but the "
                f"current one has {self.num_prompts}: resume with the same data.train_files, or start DPS afresh "
                f"(delete the dps state / snapshot file)"
            )
        if state["selector_name"] != self.config.selector:
            raise ValueError(
                f"DPS scheduler state was saved by selector {state['selector_name']!r} but rpo_verl.dps.selector is "
                f"{self.config.selector!r}"
            )
        self.selector.load_state_dict(state["selector"])
        self.num_updates = int(state["num_updates"])
        self.num_selects = int(state["num_selects"])
        self.last_selected = np.asarray(state["last_selected"], dtype=np.int64).copy()
        counts = np.asarray(state["sample_counts"])
        if counts.shape != (self.num_prompts,) or counts.dtype.kind not in "iu":
            raise ValueError(f"DPS scheduler state: sample_counts must be {self.num_prompts} integers, got "
                             f"{counts.dtype} {counts.shape}")
        self.sample_counts = counts.copy()  # keeps the saved dtype (uint16, or int64 once widened)
        self.count_hist = np.asarray(state["count_hist"], dtype=np.int64).copy()
        self.count_sum, self.count_sumsq = int(state["count_sum"]), int(state["count_sumsq"])
        self.rollouts_total, self.nan_total = int(state["rollouts_total"]), int(state["nan_total"])
        self.last_metrics = {k: float(v) for k, v in dict(state["last_metrics"]).items()}
