"""rpo_verl's trainer: launch (Hydra -> checks -> verl's run_ppo), task runner, trainer subclass."""
