"""DPS: dynamics-predictive pre-rollout prompt selection (ALGORITHMS.md §2) and its baselines.

Pure modules (no Ray): ``hmm`` (the per-prompt HMM filter), ``mopps`` (Beta posterior baseline),
``selectors`` (dps / mopps / uniform), ``state_io`` (snapshot files), ``config``.
``scheduler`` holds the plain ``SchedulerCore`` and the named Ray actor around it.
"""
