"""Pre-rollout prompt selectors (ALGORITHMS.md §2, step 1 and baselines), pure numpy.

- ``dps``: top-B prompts by the HMM's predicted μ_prior[:, PARTIAL] (spec "μ(2)"), random
  tie-break, candidates = the whole dataset (``pool_ratio=None``) or ``pool_ratio × B`` prompts
  drawn from the epoch stream (as the DPS reference draws its candidates from the dataloader).
- ``mopps``: Thompson sample θ ~ Beta(a, b) per candidate, keep the B with θ closest to 0.5.
- ``uniform``: verl's default sampler: a fresh random permutation per epoch, consecutive batches
  of B, the incomplete last batch of an epoch dropped (``drop_last=True``).
- ``dapo_ds`` is not a selector: it is verl's ``algorithm.filter_groups`` (oversample, drop
  all-right/all-wrong groups, repeat until the batch is full) and composes with any selector
  here; with a selector active, each extra generation round calls ``select(B, exclude=ids
  already in this step's batch)`` and reports its groups with ``update`` as one filter step.

Prompt ids are the dataset's stable row indices in [0, N). Every ``select`` returns distinct ids.
"""

from __future__ import annotations

import numpy as np

from rpo_verl.dps.hmm import PARTIAL, UNIFORM, HMMFilter, observed_states
from rpo_verl.dps.mopps import MoPPSPosterior

SELECTORS = ("dps", "mopps", "uniform")


def _as_ids(ids) -> np.ndarray:
    return np.unique(np.asarray(ids, dtype=np.int64).reshape(-1)) if ids is not None else np.zeros(0, np.int64)


class EpochStream:
    """Shuffled epochs over [0, N) with drop_last, reproducible from (seed, epoch, position).

    The permutation of epoch e is ``default_rng([seed, e]).permutation(N)``, so the state is three
    integers and is never stored.
    """

    def __init__(self, num_prompts: int, seed: int):
        self.num_prompts, self.seed = int(num_prompts), int(seed)
        self.epoch, self.pos = 0, 0
        self._perm: np.ndarray | None = None

    def _permutation(self) -> np.ndarray:
        if self._perm is None:
            self._perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_prompts)
        return self._perm

    def take(self, n: int, exclude: np.ndarray | None = None) -> np.ndarray:
        """Next ``n`` ids of the stream, skipping ``exclude`` (sorted unique); starts a new epoch when
        fewer than the missing number remain in this one (drop_last)."""
        exclude = _as_ids(exclude)
        if n > self.num_prompts - exclude.size:
            raise ValueError(f"cannot take {n} prompts from {self.num_prompts} with {exclude.size} excluded")
        out, need = [], n
        while need > 0:
            if self.num_prompts - self.pos < need:
                self.epoch, self.pos, self._perm = self.epoch + 1, 0, None
            chunk = self._permutation()[self.pos : self.pos + need]
            self.pos += need
            if exclude.size:
                chunk = chunk[~np.isin(chunk, exclude, assume_unique=True)]
            out.append(chunk)
            need -= chunk.size
        return np.concatenate(out).astype(np.int64)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.epoch, self.pos = int(state["seed"]), int(state["epoch"]), int(state["pos"])
        self._perm = None


def _pool_size(pool_ratio: float | None, batch_size: int, available: int) -> int | None:
    """Candidate pool size, or None for the whole dataset."""
    if pool_ratio is None:
        return None
    size = max(batch_size, int(round(pool_ratio * batch_size)))
    return None if size >= available else size


# Scores equal to this many decimals are ties: float rounding (e.g. Φ̄(α₀)·μ giving 1/3 + 1 ulp)
# must not order prompts whose exact scores are equal.
TIE_DECIMALS = 12
_UNIFORM_KEY = float(np.round(UNIFORM, TIE_DECIMALS))


def _ranked(ids: np.ndarray, scores: np.ndarray, rng: np.random.Generator, limit: int | None = None) -> np.ndarray:
    """``ids`` by descending score (rounded to TIE_DECIMALS), equal scores in random order; only
    the first ``limit`` (all ids scoring at least the limit-th best are ranked, so ties stay fair)."""
    if limit is not None and limit <= 0:
        return ids[:0]
    keys = np.round(scores, TIE_DECIMALS)
    if limit is not None and limit < ids.size:
        kth = -np.partition(-keys, limit - 1)[limit - 1]
        cand = keys >= kth
        ids, keys = ids[cand], keys[cand]
    ranked = ids[np.lexsort((rng.random(ids.size), -keys))]
    return ranked if limit is None else ranked[:limit]


def _complement_at(blocked: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """The ``ranks``-th (0-based) integers not in the sorted unique array ``blocked``."""
    return ranks + np.searchsorted(blocked - np.arange(blocked.size), ranks, side="right")


class Selector:
    """Interface: ``select`` before rollout, ``update`` after rewards, ``predict`` for metrics."""

    name = ""

    def __init__(self, num_prompts: int, seed: int):
        if num_prompts < 1:
            raise ValueError(f"num_prompts: must be >= 1, got {num_prompts}")
        self.num_prompts = int(num_prompts)
        self.rng = np.random.default_rng(seed)

    def _check_batch(self, batch_size: int, exclude: np.ndarray) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        if exclude.size and (exclude[0] < 0 or exclude[-1] >= self.num_prompts):
            raise ValueError(f"exclude: prompt ids must lie in [0, {self.num_prompts})")
        if batch_size > self.num_prompts - exclude.size:
            raise ValueError(
                f"batch_size {batch_size} exceeds the {self.num_prompts - exclude.size} selectable prompts "
                f"(dataset of {self.num_prompts}, {exclude.size} excluded)"
            )

    def select(self, batch_size: int, exclude=None) -> np.ndarray:
        raise NotImplementedError

    def predict(self, ids: np.ndarray) -> np.ndarray | None:
        """Predicted state distribution ``[B,3]`` for ``ids`` (None if the selector has no model)."""
        return None

    def update(self, ids: np.ndarray, success_rates: np.ndarray, num_rollouts: np.ndarray) -> None:
        """One time step: ``ids [B]`` were rolled out ``num_rollouts [B]`` times with ``success_rates [B]``."""

    # The cursor is the part of the state that ``select`` changes (random stream, epoch position);
    # the actor persists it after every select so a restart replays selections identically.
    def cursor_state(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_cursor_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]

    def state_dict(self) -> dict:
        return self.cursor_state()

    def load_state_dict(self, state: dict) -> None:
        self.load_cursor_state(state)


class UniformSelector(Selector):
    name = "uniform"

    def __init__(self, num_prompts: int, seed: int = 0):
        super().__init__(num_prompts, seed)
        self.stream = EpochStream(num_prompts, seed)

    def select(self, batch_size: int, exclude=None) -> np.ndarray:
        exclude = _as_ids(exclude)
        self._check_batch(batch_size, exclude)
        return self.stream.take(batch_size, exclude)

    def cursor_state(self) -> dict:
        return {**super().cursor_state(), "stream": self.stream.state_dict()}

    def load_cursor_state(self, state: dict) -> None:
        super().load_cursor_state(state)
        self.stream.load_state_dict(state["stream"])


class DPSSelector(UniformSelector):
    """Top-B by predicted μ(partial) (spec step 1) over an ``HMMFilter`` (spec steps 2-4)."""

    name = "dps"

    def __init__(self, num_prompts: int, seed: int = 0, decay: float = 0.7, prior_alpha: float = 1.0,
                 pool_ratio: float | None = None, settle_tol: float = 1e-9):
        super().__init__(num_prompts, seed)
        self.pool_ratio = pool_ratio
        self.filter = HMMFilter(num_prompts, decay=decay, prior_alpha=prior_alpha, settle_tol=settle_tol)

    def select(self, batch_size: int, exclude=None) -> np.ndarray:
        exclude = _as_ids(exclude)
        self._check_batch(batch_size, exclude)
        pool = _pool_size(self.pool_ratio, batch_size, self.num_prompts - exclude.size)
        if pool is not None:
            cands = self.stream.take(pool, exclude)
            return _ranked(cands, self.filter.scores(cands), self.rng, batch_size)
        return self._select_all(batch_size, exclude)

    def _select_all(self, batch_size: int, exclude: np.ndarray) -> np.ndarray:
        """Top-B over all N in O(active + B): prompts outside the filter's active set all score
        exactly UNIFORM, so they form one tie group sampled without listing them."""
        f = self.filter
        ids, blocked = f.active_ids, f.active_ids
        scores = np.round(f.mu_prior[:, PARTIAL], TIE_DECIMALS)
        if exclude.size:
            keep = ~np.isin(ids, exclude, assume_unique=True)
            ids, scores, blocked = ids[keep], scores[keep], np.union1d(f.active_ids, exclude)
        up, down = scores > _UNIFORM_KEY, scores < _UNIFORM_KEY
        above = _ranked(ids[up], scores[up], self.rng, batch_size)
        need = batch_size - above.size
        tied = np.zeros(0, np.int64)
        if need > 0:
            tied_active = ids[scores == _UNIFORM_KEY]
            pool = tied_active.size + (self.num_prompts - blocked.size)
            pick = self.rng.choice(pool, size=min(need, pool), replace=False)
            from_free = _complement_at(blocked, pick[pick >= tied_active.size] - tied_active.size)
            tied = np.concatenate([tied_active[pick[pick < tied_active.size]], from_free])
            need -= tied.size
        below = _ranked(ids[down], scores[down], self.rng, max(need, 0))
        return np.concatenate([above, tied, below]).astype(np.int64)

    def predict(self, ids: np.ndarray) -> np.ndarray:
        return self.filter.prior(ids)

    def update(self, ids, success_rates, num_rollouts) -> None:
        self.filter.update(ids, observed_states(success_rates))

    def state_dict(self) -> dict:
        return {**super().state_dict(), "filter": self.filter.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.filter.load_state_dict(state["filter"])


class MoPPSSelector(UniformSelector):
    """Thompson sample of the Beta posterior closest to 0.5, from a pool of ``pool_ratio × B``."""

    name = "mopps"

    def __init__(self, num_prompts: int, seed: int = 0, decay: float = 0.7, prior_alpha: float = 1.0,
                 pool_ratio: float | None = None):
        super().__init__(num_prompts, seed)
        self.pool_ratio = pool_ratio
        self.posterior = MoPPSPosterior(num_prompts, decay=decay, prior=prior_alpha)

    def select(self, batch_size: int, exclude=None) -> np.ndarray:
        exclude = _as_ids(exclude)
        self._check_batch(batch_size, exclude)
        pool = _pool_size(self.pool_ratio, batch_size, self.num_prompts - exclude.size)
        if pool is not None:
            cands = self.stream.take(pool, exclude)
        else:
            cands = np.setdiff1d(np.arange(self.num_prompts), exclude, assume_unique=True)
        a, b = self.posterior.params(cands)
        theta = self.rng.beta(a, b)
        return cands[np.argsort(np.abs(theta - 0.5), kind="stable")[:batch_size]]

    def update(self, ids, success_rates, num_rollouts) -> None:
        self.posterior.update(ids, success_rates, num_rollouts)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "posterior": self.posterior.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.posterior.load_state_dict(state["posterior"])


def make_selector(name: str, num_prompts: int, *, seed: int = 0, decay: float = 0.7, prior_alpha: float = 1.0,
                  pool_ratio: float | None = None, settle_tol: float = 1e-9) -> Selector:
    if name == "dps":
        return DPSSelector(num_prompts, seed, decay, prior_alpha, pool_ratio, settle_tol)
    if name == "mopps":
        return MoPPSSelector(num_prompts, seed, decay, prior_alpha, pool_ratio)
    if name == "uniform":
        return UniformSelector(num_prompts, seed)
    raise ValueError(f"selector: {name!r} is not one of {list(SELECTORS)} (dapo_ds is algorithm.filter_groups)")
