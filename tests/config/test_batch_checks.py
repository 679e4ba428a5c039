"""``batch_split``: a micro-batch size that does not divide a rank's rows is refused at start-up."""

from rpo_verl.config.batch_checks import check_batch_split
from rpo_verl.config.checks import all_checks

AR = "actor_rollout_ref"


def _cfg(compose_config, *overrides):
    return compose_config("preset=cpu", *overrides)


def test_registered_as_a_generic_check():
    assert "batch_split" in all_checks()


def test_cpu_preset_defaults_split_cleanly(compose_config):
    assert check_batch_split(_cfg(compose_config)) == []


def test_two_rows_per_rank_against_micro_batch_8_is_refused(compose_config):
    # The Slurm quick start's shape that failed inside verl: 1 prompt x 4 samples on 2 trainer ranks.
    cfg = _cfg(compose_config, "data.train_batch_size=1", f"{AR}.rollout.n=4", "trainer.n_gpus_per_node=2",
               f"{AR}.actor.ppo_mini_batch_size=1", "algorithm.rollout_correction.bypass_mode=false")
    problems = check_batch_split(cfg)
    keys = [p.key for p in problems]
    assert f"{AR}.rollout.log_prob_micro_batch_size_per_gpu" in keys
    assert f"{AR}.actor.ppo_micro_batch_size_per_gpu" in keys
    msg = next(p.message for p in problems if p.key.endswith("rollout.log_prob_micro_batch_size_per_gpu"))
    assert "2 rows per rank" in msg and "=2" in msg and "2 rank(s)" in msg
    assert all(p.check == "batch_split" and not p.environment for p in problems)


def test_the_fix_it_names_passes(compose_config):
    cfg = _cfg(compose_config, "data.train_batch_size=1", f"{AR}.rollout.n=4", "trainer.n_gpus_per_node=2",
               f"{AR}.actor.ppo_mini_batch_size=1", "algorithm.rollout_correction.bypass_mode=false",
               f"{AR}.rollout.log_prob_micro_batch_size_per_gpu=2", f"{AR}.actor.ppo_micro_batch_size_per_gpu=2")
    assert check_batch_split(cfg) == []


def test_old_log_prob_pass_skipped_in_bypass_mode(compose_config):
    cfg = _cfg(compose_config, "data.train_batch_size=1", f"{AR}.rollout.n=4",
               "algorithm.rollout_correction.bypass_mode=true", f"{AR}.actor.ppo_mini_batch_size=1",
               f"{AR}.actor.ppo_micro_batch_size_per_gpu=4")
    assert check_batch_split(cfg) == []


def test_reference_pass_checked_only_with_a_kl_term(compose_config):
    base = ("data.train_batch_size=2", f"{AR}.rollout.n=3", "algorithm.rollout_correction.bypass_mode=true",
            f"{AR}.actor.ppo_mini_batch_size=2", f"{AR}.actor.ppo_micro_batch_size_per_gpu=6",
            f"{AR}.ref.log_prob_micro_batch_size_per_gpu=4")
    assert check_batch_split(_cfg(compose_config, *base)) == []
    problems = check_batch_split(_cfg(compose_config, *base, f"{AR}.actor.use_kl_loss=true"))
    assert [p.key for p in problems] == [f"{AR}.ref.log_prob_micro_batch_size_per_gpu"]
    assert "6 rows per rank" in problems[0].message and f"{AR}.ref.log_prob_micro_batch_size_per_gpu=3" in \
        problems[0].message


def test_dynamic_batch_sizes_are_not_checked(compose_config):
    cfg = _cfg(compose_config, "data.train_batch_size=1", f"{AR}.rollout.n=2", f"{AR}.actor.ppo_mini_batch_size=1",
               f"{AR}.actor.use_dynamic_bsz=true", "algorithm.rollout_correction.bypass_mode=false")
    assert check_batch_split(cfg) == []
