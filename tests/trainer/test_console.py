"""The console: step and validation lines, modes, and how it attaches to verl's Tracking."""

import io

import pytest

from rpo_verl.config.features import FEATURES, build_run_config
from rpo_verl.config.validation import ConfigError
from rpo_verl.trainer import console
from rpo_verl.trainer.console import StepConsole, attach, step_line, tokens_field

STEP = {
    "training/global_step": 3,
    "critic/score/mean": 0.25,
    "eff/gen_tokens": 500,
    "timing_s/gen": 9.12, "timing_s/update_actor": 14.2, "timing_s/update_weights": 2.04,
    "timing_s/old_log_prob": 0.0, "timing_s/step": 27.4,
}


def test_step_line_has_progress_reward_tokens_phases_and_eta():
    line = step_line(STEP, 3, 10, eta_s=192.0)
    assert line == ("[rpo_verl] step 3/10 | reward 0.250 | tokens 500 | s: gen 9.1 update 14.2 sync 2.0 step 27.4"
                    " | ETA 03:12")
    assert "\n" not in line


def test_step_line_shows_validation_and_the_full_path_saving():
    metrics = dict(STEP, **{"val-core/arith/acc/mean@1": 0.3125, "val-aux/arith/reward/mean@1": 9.0,
                            "eff/generated_tokens": 412, "eff/full_path_equiv_tokens": 981})
    line = step_line(metrics, 3, 10, None)
    assert "| val acc 0.312 |" in line
    assert "tokens 412 (-58% vs 981 full-path)" in line  # the feature's count wins over eff/gen_tokens
    assert "ETA" not in line


def test_tokens_field_without_a_saving():
    assert tokens_field({"eff/gen_tokens": 1234.0}) == "tokens 1,234"
    assert tokens_field({"eff/generated_tokens": 128, "eff/full_path_equiv_tokens": 128}) == "tokens 128"
    assert tokens_field({}) is None


def test_feature_fields_come_from_the_feature_contract():
    fields = [(name, *field) for name, spec in FEATURES.items() for field in spec.console]
    assert {f[0] for f in fields} == {"rpo", "dps", "r2vpo"}
    for name, metric, _label, _spec in fields:
        assert FEATURES[name].owns_metric(metric)
    line = step_line(dict(STEP, **{"rpo/cache_hit_rate": 0.75}), 3, 10, None, fields)
    assert "| rpo cache hits 75%" in line and "dps" not in line


def _run(mode, clock_values):
    out = io.StringIO()
    clock = iter(clock_values)
    con = StepConsole(mode, total_steps=4, stream=out, clock=lambda: next(clock))
    con.start("training steps 1-4")
    con.log({"val-core/a/acc/mean@1": 0.1, "timing_s/validate": 5.0}, step=0)
    for step in (1, 2):
        con.log(dict(STEP, **{"training/global_step": step}), step=step)
    con.finish("metrics: m.jsonl")
    return out.getvalue().splitlines()


def test_steps_mode_prints_start_validation_steps_and_end():
    lines = _run("steps", [0.0, 0.0, 5.0, 35.0, 55.0])
    assert lines[0] == "[rpo_verl] training steps 1-4"
    assert lines[1] == "[rpo_verl] validation before training: val acc 0.100 (5.0 s)"
    assert lines[2].startswith("[rpo_verl] step 1/4 |") and lines[2].endswith("ETA 01:30")  # 30 s x 3 left
    assert lines[3].endswith("ETA 00:50")  # (30 + 20) / 2 x 2 left
    assert lines[4] == "[rpo_verl] training finished at step 2/4; validation 0.100 -> 0.100; metrics: m.jsonl"
    assert len(lines) == 5


def test_quiet_mode_prints_start_and_end_only_and_full_mode_nothing():
    quiet = _run("quiet", [0.0] * 5)
    assert len(quiet) == 2 and "training steps 1-4" in quiet[0] and "finished at step 2/4" in quiet[1]
    assert _run("full", [0.0] * 5) == []


class _Tracking:  # what attach relies on in verl's Tracking: a dict of backends
    def __init__(self, names):
        self.logger = {name: object() for name in names}


@pytest.mark.parametrize("mode, kept", [("steps", ["file"]), ("quiet", ["file"]), ("full", ["console", "file"])])
def test_attach_replaces_verls_console_outside_full_mode(mode, kept):
    tracking = attach(_Tracking(["console", "file"]), StepConsole(mode, 2))
    assert sorted(tracking.logger) == sorted(kept + [console.BACKEND])


def test_console_env_switches_progress_bars_off_outside_full_mode():
    assert console.console_env("full") == {}
    assert console.console_env("steps")["TQDM_DISABLE"] == "1" == console.console_env("quiet")["TQDM_DISABLE"]
    assert "VERL_LOGGING_LEVEL" not in console.console_env("steps")
    assert console.console_env("quiet")["VERL_LOGGING_LEVEL"] == "WARNING"


def test_console_key_is_validated_strictly(compose_config):
    assert build_run_config(compose_config().rpo_verl).console == "steps"
    assert build_run_config(compose_config("rpo_verl.console=quiet").rpo_verl).console == "quiet"
    with pytest.raises(ConfigError, match=r"^rpo_verl\.console: 'loud' is not one of \['steps', 'full', 'quiet'\]"):
        build_run_config(compose_config("rpo_verl.console=loud").rpo_verl)
    with pytest.raises(ValueError, match="rpo_verl.console"):
        StepConsole("loud", 2)


def test_invalid_console_fails_at_start_up_naming_the_key(compose_config, capsys):
    from rpo_verl.trainer.launch import main_with_clean_errors

    with pytest.raises(SystemExit) as exit_info:
        main_with_clean_errors(compose_config("preset=cpu", "rpo_verl.console=loud"))
    assert exit_info.value.code == 2
    assert "rpo_verl.console" in capsys.readouterr().err


def test_verls_validation_metric_dumps_are_dropped_and_nothing_else():
    import types

    printed = []
    module = types.SimpleNamespace(pprint=lambda obj, *a, **k: printed.append(obj))
    console.drop_verl_metric_dumps(module)
    console.drop_verl_metric_dumps(module)  # idempotent: one wrapper
    module.pprint("Initial validation metrics: {'val-core/x/acc/mean@1': 0.5}")
    module.pprint("Final validation metrics: {'val-core/x/acc/mean@1': 0.6}")
    module.pprint("Validation metrics of a custom loop: {}")
    module.pprint({"a": 1})
    assert printed == ["Validation metrics of a custom loop: {}", {"a": 1}]


def test_verl_trainer_base_still_pprints_by_name():
    # drop_verl_metric_dumps wraps the name verl's fit() calls; fails if verl stops importing it so.
    import inspect

    import verl.trainer.ppo.v1.trainer_base as tb

    source = inspect.getsource(tb)
    assert "from pprint import pprint" in source
    assert all(f'pprint(f"{prefix}' in source for prefix in console.VERL_METRIC_DUMPS)
