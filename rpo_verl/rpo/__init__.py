"""RPO (partial reasoning optimisation): experience cache, prefix cuts, cache updates, suffix rollouts.

Submodules are imported on demand; this package import stays cheap (verl's plugin loader imports
``rpo_verl.rpo.registration`` in every verl process).
"""
