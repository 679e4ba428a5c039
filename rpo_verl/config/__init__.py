"""rpo_verl configuration: Hydra YAML files and strict dataclass validation."""

from rpo_verl.config.validation import ConfigError, build_config, to_dict

__all__ = ["ConfigError", "build_config", "to_dict"]
