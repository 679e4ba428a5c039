"""DPS: dynamics-predictive pre-rollout prompt selection (ALGORITHMS.md §2) and its baselines.

Pure modules (no Ray): ``hmm`` (the per-prompt HMM filter), ``mopps`` (Beta posterior baseline),
``selectors`` (dps / mopps / uniform), ``state_io`` (snapshot files), ``count_journal`` (the
per-prompt sample counts persisted in O(batch) per update), ``config``, ``core`` (the plain
``SchedulerCore``). ``scheduler`` holds the named Ray actor around it.
"""
