"""MoPPS baseline (arXiv 2507.04632; ALGORITHMS.md §2 "MoPPS baseline"), pure numpy.

Per prompt a Beta(a, b) posterior over its success rate, prior Beta(α₀, β₀) with α₀ = β₀ =
``prior``. After a step in which a prompt was rolled out k times with success rate s:
    a ← λa + (1-λ)α₀ + s·k,   b ← λb + (1-λ)β₀ + (1-s)·k,
and every other prompt decays, a ← λa + (1-λ)α₀ (same for b). The decay is applied lazily and
exactly in closed form: after Δ steps without an observation a = α₀ + λ^Δ (a - α₀), so a step
costs O(B) and only prompts that are read pay for their decay.
Arrays: ``a``, ``b`` ``[N]`` float64 (value at the prompt's last touch), ``touched`` ``[N]`` int64
(the step at which that value was current).
"""

from __future__ import annotations

import numpy as np


class MoPPSPosterior:
    def __init__(self, num_prompts: int, decay: float = 0.7, prior: float = 1.0):
        if num_prompts < 1:
            raise ValueError(f"num_prompts: must be >= 1, got {num_prompts}")
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay: λ must be in [0, 1], got {decay}")
        if not prior > 0.0:
            raise ValueError(f"prior: must be > 0, got {prior}")
        self.num_prompts, self.decay, self.prior = int(num_prompts), float(decay), float(prior)
        self.step = 0
        self.a = np.full(num_prompts, prior)
        self.b = np.full(num_prompts, prior)
        self.touched = np.zeros(num_prompts, dtype=np.int64)

    def params(self, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Current (a, b) for ``ids`` (all prompts when None), decay applied up to now."""
        ids = np.arange(self.num_prompts) if ids is None else np.asarray(ids, dtype=np.int64)
        factor = self.decay ** (self.step - self.touched[ids]).astype(np.float64)
        a = self.prior + factor * (self.a[ids] - self.prior)
        b = self.prior + factor * (self.b[ids] - self.prior)
        return a, b

    def update(self, ids: np.ndarray, success_rates: np.ndarray, num_rollouts: np.ndarray) -> None:
        """One step: prompts ``ids [B]`` with success rate ``[B]`` (NaN = unobserved) over ``num_rollouts [B]``."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        s = np.asarray(success_rates, dtype=np.float64).reshape(-1)
        k = np.broadcast_to(np.asarray(num_rollouts, dtype=np.float64), s.shape)
        if np.unique(ids).size != ids.size:
            raise ValueError("prompt_ids must be distinct within one update")
        seen = ~np.isnan(s)
        ids, s, k = ids[seen], s[seen], k[seen]
        a, b = self.params(ids)
        # This step's decay for the observed prompts, then their counts; the rest stay lazy.
        self.a[ids] = self.decay * a + (1.0 - self.decay) * self.prior + s * k
        self.b[ids] = self.decay * b + (1.0 - self.decay) * self.prior + (1.0 - s) * k
        self.step += 1
        self.touched[ids] = self.step

    def state_dict(self) -> dict:
        return {"num_prompts": self.num_prompts, "step": self.step, "a": self.a.copy(), "b": self.b.copy(),
                "touched": self.touched.copy()}

    def load_state_dict(self, state: dict) -> None:
        if int(state["num_prompts"]) != self.num_prompts:
            raise ValueError(
                f"MoPPS state is for {int(state['num_prompts'])} prompts but this posterior tracks {self.num_prompts}"
            )
        self.step = int(state["step"])
        self.a = np.asarray(state["a"], dtype=np.float64).copy()
        self.b = np.asarray(state["b"], dtype=np.float64).copy()
        self.touched = np.asarray(state["touched"], dtype=np.int64).copy()
