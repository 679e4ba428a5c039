"""``python -m rpo_verl.main [preset=cpu] [key=value ...]``: train with verl's v1 trainer + rpo_verl.

The config is ``rpo_verl/config/rpo_trainer.yaml`` composed over verl's ``ppo_trainer.yaml``
(``pkg://verl.trainer.config``); any verl or rpo_verl key can be overridden on the command line.
``rpo_verl.dry_run=true`` validates and prints the resolved config without starting Ray.
"""

import hydra

from rpo_verl.trainer.launch import main_with_clean_errors


@hydra.main(config_path="config", config_name="rpo_trainer", version_base=None)
def main(config):
    main_with_clean_errors(config)


if __name__ == "__main__":
    main()
