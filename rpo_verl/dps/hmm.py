"""DPS per-prompt hidden Markov filter (ALGORITHMS.md §2, DPS arXiv 2603.10887), pure numpy.

States (0-based here; the spec numbers them 1/2/3):
    UNSOLVED = 0  (spec state 1, success rate p̂ = 0)
    PARTIAL  = 1  (spec state 2, 0 < p̂ < 1; "μ(2)" in the spec is ``mu[:, PARTIAL]``)
    SOLVED   = 2  (spec state 3, p̂ = 1)

Per prompt: Dirichlet counts α ``[3,3]`` over a column-stochastic transition matrix
(``Φ[i,j] = P(z_t=i | z_{t-1}=j)``, prior α₀ = ``prior_alpha`` everywhere), the predictive prior
μ_prior ``[3]`` and the previous posterior μ_post_{t-1} ``[3]``. One call of ``hmm_step`` is one
filter time step for a set of prompts (spec steps 2-4; step 1, selection, lives in selectors.py):

2. correct: μ_post = onehot(observed state) for observed prompts, μ_prior otherwise;
3. learn:   α ← λα + (1-λ)α₀ + ξ, ξ[i,j] ∝ μ_post_t[i]·Φ̄_{t-1}[i,j]·μ_post_{t-1}[j] (sum 1) for
            observed prompts, ξ = 0 otherwise; Φ̄ = α / Σ_i α (column means of the Dirichlet);
4. predict: μ_prior_{t+1} = normalise(Φ̄_t μ_post_t).

Every prompt is updated every step. A prompt at the prior (α = α₀, μ_prior = μ_post = uniform)
is an exact fixed point of steps 2-4 when unobserved (Φ̄(α₀) is the all-1/3 matrix), which
``HMMFilter`` exploits: it stores only the "active" prompts that differ from that fixed point and
treats all others implicitly, so a step costs O(active + B) instead of O(N). An unobserved prompt
returns to the fixed point geometrically: α ≥ α₀ always, D = max|α-α₀| shrinks by exactly λ per
step, and |Φ̄-1/3| ≤ 2D/(9α₀) entrywise, hence |μ_prior-1/3| ≤ 2D/(9α₀) one step later. From the
D left by its last observation, the filter computes the first step at which these bounds put α,
μ_prior and μ_post within ``settle_tol`` (default 1e-9, far below float32 resolution) of the fixed
point, and drops the prompt from the active set then. With ``settle_tol=0`` (or λ = 1) nothing
is ever dropped and the filter is the dense recursion restricted to prompts ever observed (still
exact: the rest sit at the fixed point). ``DenseHMMFilter`` is the plain all-prompts version.
"""

from __future__ import annotations

import numpy as np

UNSOLVED, PARTIAL, SOLVED = 0, 1, 2
NUM_STATES = 3
UNOBSERVED = -1
UNIFORM = 1.0 / NUM_STATES


def observed_states(success_rates: np.ndarray) -> np.ndarray:
    """Success rate p̂ in [0,1] per prompt ``[B]`` -> state ``[B]`` int8; NaN -> UNOBSERVED (-1)."""
    s = np.asarray(success_rates, dtype=np.float64)
    states = np.full(s.shape, PARTIAL, dtype=np.int8)
    states[s <= 0.0] = UNSOLVED
    states[s >= 1.0] = SOLVED
    states[np.isnan(s)] = UNOBSERVED
    return states


def hmm_step(
    alpha: np.ndarray,
    mu_prior: np.ndarray,
    mu_post_prev: np.ndarray,
    obs_rows: np.ndarray,
    obs_states: np.ndarray,
    decay: float,
    prior_alpha: float,
) -> None:
    """One filter step (spec steps 2-4) for every row, in place.

    alpha ``[M,3,3]``, mu_prior ``[M,3]``, mu_post_prev ``[M,3]`` (same float dtype);
    obs_rows ``[K]`` distinct row indices observed this step with obs_states ``[K]`` in {0,1,2}.
    """
    obs_rows = np.asarray(obs_rows, dtype=np.int64)
    obs_states = np.asarray(obs_states, dtype=np.int64)
    # Step 2 (correct): unobserved rows keep their prior as posterior.
    onehot = np.zeros((len(obs_rows), NUM_STATES), dtype=alpha.dtype)
    onehot[np.arange(len(obs_rows)), obs_states] = 1.0
    # Step 3 (learn): ξ from the *previous* Φ̄ and posterior, only for observed rows.
    a_obs = alpha[obs_rows]  # [K,3,3]
    phi_prev = a_obs / a_obs.sum(axis=1, keepdims=True)
    xi = onehot[:, :, None] * phi_prev * mu_post_prev[obs_rows][:, None, :]
    xi /= xi.sum(axis=(1, 2), keepdims=True)
    alpha *= decay
    alpha += (1.0 - decay) * prior_alpha
    alpha[obs_rows] += xi
    # Posterior of this step becomes μ_post_{t-1} of the next one.
    mu_post_prev[...] = mu_prior
    mu_post_prev[obs_rows] = onehot
    # Step 4 (predict): μ_prior[i] = Σ_j α[i,j]/colsum[j] · μ_post[j], without an [M,3,3] temporary.
    weights = mu_post_prev / alpha.sum(axis=1)
    np.einsum("mij,mj->mi", alpha, weights, out=mu_prior)
    mu_prior /= mu_prior.sum(axis=1, keepdims=True)


def _check_params(num_prompts: int, decay: float, prior_alpha: float) -> None:
    if num_prompts < 1:
        raise ValueError(f"num_prompts: must be >= 1, got {num_prompts}")
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay: λ must be in [0, 1], got {decay}")
    if not prior_alpha > 0.0:
        raise ValueError(f"prior_alpha: α₀ must be > 0, got {prior_alpha}")


def _check_update(num_prompts: int, ids: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    states = np.asarray(states, dtype=np.int8).reshape(-1)
    if ids.shape != states.shape:
        raise ValueError(f"prompt_ids ({ids.shape[0]}) and states ({states.shape[0]}) differ in length")
    if ids.size and (ids.min() < 0 or ids.max() >= num_prompts):
        raise ValueError(f"prompt_ids must lie in [0, {num_prompts}), got {ids.min()}..{ids.max()}")
    if np.unique(ids).size != ids.size:
        raise ValueError("prompt_ids must be distinct within one update")
    if states.size and (states.min() < UNOBSERVED or states.max() > SOLVED):
        raise ValueError("states must be -1 (unobserved), 0, 1 or 2")
    return ids, states


class DenseHMMFilter:
    """The filter over all N prompts with dense arrays α ``[N,3,3]``, μ ``[N,3]`` (O(N) per step)."""

    def __init__(self, num_prompts: int, decay: float = 0.7, prior_alpha: float = 1.0, dtype=np.float64):
        _check_params(num_prompts, decay, prior_alpha)
        self.num_prompts, self.decay, self.prior_alpha = num_prompts, float(decay), float(prior_alpha)
        self.alpha = np.full((num_prompts, NUM_STATES, NUM_STATES), prior_alpha, dtype=dtype)
        self.mu_prior = np.full((num_prompts, NUM_STATES), UNIFORM, dtype=dtype)
        self.mu_post_prev = np.full((num_prompts, NUM_STATES), UNIFORM, dtype=dtype)
        self.step = 0

    def scores(self, ids: np.ndarray | None = None) -> np.ndarray:
        """Predicted μ_prior[:, PARTIAL] for ``ids`` (all prompts when None)."""
        return self.mu_prior[:, PARTIAL] if ids is None else self.mu_prior[np.asarray(ids), PARTIAL]

    def update(self, ids: np.ndarray, states: np.ndarray) -> None:
        ids, states = _check_update(self.num_prompts, ids, states)
        seen = states != UNOBSERVED
        hmm_step(self.alpha, self.mu_prior, self.mu_post_prev, ids[seen], states[seen], self.decay, self.prior_alpha)
        self.step += 1


class HMMFilter:
    """The filter storing only prompts away from the prior fixed point (see module docstring).

    Active prompts are kept sorted by id in ``active_ids [M]``; their float64 state is one packed
    array ``[M,15]`` viewed as ``alpha [M,3,3]``, ``mu_prior [M,3]``, ``mu_post_prev [M,3]``, and
    ``settle_at [M]`` is the step after which each may be dropped. Every other prompt has α = α₀
    and uniform μ.
    """

    _WIDTH = NUM_STATES * NUM_STATES + 2 * NUM_STATES
    _NEVER = np.iinfo(np.int64).max

    def __init__(self, num_prompts: int, decay: float = 0.7, prior_alpha: float = 1.0, settle_tol: float = 1e-9):
        _check_params(num_prompts, decay, prior_alpha)
        if not settle_tol >= 0.0:
            raise ValueError(f"settle_tol: must be >= 0, got {settle_tol}")
        self.num_prompts = int(num_prompts)
        self.decay, self.prior_alpha, self.settle_tol = float(decay), float(prior_alpha), float(settle_tol)
        self.step = 0
        self.active_ids = np.zeros(0, dtype=np.int64)
        self.settle_at = np.zeros(0, dtype=np.int64)
        self._state = np.zeros((0, self._WIDTH))

    # Views into the packed state (in-place updates write through).
    @property
    def alpha(self) -> np.ndarray:
        return self._state[:, :9].reshape(-1, NUM_STATES, NUM_STATES)

    @property
    def mu_prior(self) -> np.ndarray:
        return self._state[:, 9:12]

    @property
    def mu_post_prev(self) -> np.ndarray:
        return self._state[:, 12:15]

    # --- queries -------------------------------------------------------------------------
    def _rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row in the active arrays, is-active mask) for ``ids``."""
        m = len(self.active_ids)
        if not m:
            return np.zeros(np.shape(ids), dtype=np.int64), np.zeros(np.shape(ids), dtype=bool)
        rows = np.minimum(np.searchsorted(self.active_ids, ids), m - 1)
        return rows, self.active_ids[rows] == ids

    def prior(self, ids: np.ndarray) -> np.ndarray:
        """μ_prior ``[len(ids),3]`` (the prediction for the coming step)."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.full((len(ids), NUM_STATES), UNIFORM)
        rows, hit = self._rows(ids)
        out[hit] = self.mu_prior[rows[hit]]
        return out

    def scores(self, ids: np.ndarray) -> np.ndarray:
        """μ_prior[:, PARTIAL] for ``ids`` (the DPS ranking score)."""
        return self.prior(ids)[:, PARTIAL]

    def dense(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Full (alpha ``[N,3,3]``, mu_prior ``[N,3]``, mu_post_prev ``[N,3]``); for tests and small N."""
        alpha = np.full((self.num_prompts, NUM_STATES, NUM_STATES), self.prior_alpha)
        mu_prior = np.full((self.num_prompts, NUM_STATES), UNIFORM)
        mu_post_prev = mu_prior.copy()
        alpha[self.active_ids], mu_prior[self.active_ids] = self.alpha, self.mu_prior
        mu_post_prev[self.active_ids] = self.mu_post_prev
        return alpha, mu_prior, mu_post_prev

    # --- the filter step ----------------------------------------------------------------
    def update(self, ids: np.ndarray, states: np.ndarray) -> None:
        """One time step: ``ids [B]`` observed in ``states [B]`` (-1 = no observation)."""
        ids, states = _check_update(self.num_prompts, ids, states)
        seen = states != UNOBSERVED
        ids, states = ids[seen], states[seen]
        self._activate(ids)
        rows = np.searchsorted(self.active_ids, ids)
        hmm_step(self.alpha, self.mu_prior, self.mu_post_prev, rows, states, self.decay, self.prior_alpha)
        self.step += 1
        deviation = (self._state[rows, :9] - self.prior_alpha).max(axis=1, initial=0.0)
        self.settle_at[rows] = self.step + self._steps_to_settle(deviation)
        due = self.settle_at <= self.step
        if due.any():
            keep = ~due
            self.active_ids, self.settle_at, self._state = self.active_ids[keep], self.settle_at[keep], self._state[keep]

    def _steps_to_settle(self, deviation: np.ndarray) -> np.ndarray:
        """Unobserved steps after which a prompt left with max|α-α₀| = ``deviation`` is within
        ``settle_tol`` of the fixed point (α: D·λ^j ≤ tol·α₀; μ_prior and μ_post: 2D·λ^(j-1)/(9α₀) ≤ tol)."""
        tol, lam, c = self.settle_tol, self.decay, self.prior_alpha
        if tol == 0.0 or lam == 1.0:
            return np.full(deviation.shape, self._NEVER - self.step - 1, dtype=np.int64)
        d = np.maximum(deviation, 1e-300)
        if lam == 0.0:
            return np.where(d <= 4.5 * tol * c, 1, 2).astype(np.int64)
        j_alpha = np.ceil(np.log(tol * c / d) / np.log(lam))
        j_mu = 1 + np.ceil(np.log(4.5 * tol * c / d) / np.log(lam))
        # +1: margin for rounding in the logarithms.
        return (np.maximum(np.maximum(j_alpha, j_mu), 1) + 1).astype(np.int64)

    def _activate(self, ids: np.ndarray) -> None:
        """Materialise prompts at the fixed point so they can be updated (keeps ids sorted)."""
        new = np.sort(np.setdiff1d(ids, self.active_ids, assume_unique=True))
        if not new.size:
            return
        at = np.searchsorted(self.active_ids, new)
        row = np.concatenate([np.full(9, self.prior_alpha), np.full(6, UNIFORM)])
        self.active_ids = np.insert(self.active_ids, at, new)
        self.settle_at = np.insert(self.settle_at, at, self._NEVER)
        self._state = np.insert(self._state, at, row, axis=0)

    # --- persistence --------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "num_prompts": self.num_prompts,
            "decay": self.decay,
            "prior_alpha": self.prior_alpha,
            "settle_tol": self.settle_tol,
            "step": self.step,
            "active_ids": self.active_ids.copy(),
            "settle_at": self.settle_at.copy(),
            "alpha": self.alpha.copy(),
            "mu_prior": self.mu_prior.copy(),
            "mu_post_prev": self.mu_post_prev.copy(),
        }

    def load_state_dict(self, state: dict) -> None:
        if int(state["num_prompts"]) != self.num_prompts:
            raise ValueError(
                f"DPS HMM state is for {int(state['num_prompts'])} prompts but this filter tracks {self.num_prompts}"
            )
        ids = np.asarray(state["active_ids"], dtype=np.int64)
        m = len(ids)
        alpha = np.asarray(state["alpha"], dtype=np.float64)
        mu_prior = np.asarray(state["mu_prior"], dtype=np.float64)
        mu_post_prev = np.asarray(state["mu_post_prev"], dtype=np.float64)
        settle_at = np.asarray(state["settle_at"], dtype=np.int64)
        if alpha.shape != (m, 3, 3) or mu_prior.shape != (m, 3) or mu_post_prev.shape != (m, 3) or settle_at.shape != (m,):
            raise ValueError("DPS HMM state arrays have inconsistent shapes")
        self.step = int(state["step"])
        self.active_ids, self.settle_at = ids.copy(), settle_at.copy()
        self._state = np.concatenate([alpha.reshape(m, 9), mu_prior, mu_post_prev], axis=1)
