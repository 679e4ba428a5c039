"""RpoVerlTrainer's own logic, without Ray: step counting guards, extension hooks, checkpoint state.

The trainer is built from a real composed config (tiny model, tiny parquet files); only the Ray
worker group is replaced by a recorder where verl's checkpoint code calls it.
"""

import dataclasses
import os
import sys
import types
from dataclasses import dataclass

import pytest
import torch
from omegaconf import OmegaConf

from rpo_verl.config import features
from rpo_verl.config.features import FeatureSpec
from rpo_verl.trainer.extension import TrainerExtension
from rpo_verl.trainer.trainer import EXTENSION_STATE_FILE, RpoVerlTrainer


@dataclass
class DemoConfig:
    enable: bool = True
    tag: str = "demo"


class DemoExtension(TrainerExtension):
    def __init__(self, trainer, config, name):
        super().__init__(trainer, config, name)
        self.calls, self.loaded = [], None

    def before_rollout(self, batch):
        self.calls.append(("before_rollout", len(batch)))
        batch["rpo_tag"] = torch.full((len(batch),), 7)
        return batch

    def state_dict(self):
        return {"tag": self.config.tag, "calls": len(self.calls)}

    def load_state_dict(self, state):
        self.loaded = state


class WorkerSwapExtension(TrainerExtension):
    """Runs its own subclass of verl's actor worker (as a feature owning optimizer state would)."""

    def worker_class(self, role, cls):
        if role != "actor_rollout":
            return cls
        return type("DemoActorWorker", (cls,), {})


class MetricsExtension(TrainerExtension):
    """Logs one metric in its namespace, one in a shared one and one in another feature's."""

    def step_metrics(self):
        return {"metered/a": 1.0, "eff/b": 2.0, "rpo/c": 3.0}


class PickingExtension(TrainerExtension):
    """Selects prompts itself: draws 2x candidates from the dataloader and keeps every other one."""

    def fetch_prompts(self, num_prompts):
        candidates = self.trainer.fetch_dataloader_prompts(2 * num_prompts)
        return candidates[::2]


@pytest.fixture
def demo_features(monkeypatch):
    module = types.ModuleType("rpo_verl_demo_ext")
    module.DemoConfig, module.DemoExtension, module.PickingExtension = DemoConfig, DemoExtension, PickingExtension
    module.WorkerSwapExtension = WorkerSwapExtension
    monkeypatch.setitem(sys.modules, "rpo_verl_demo_ext", module)
    monkeypatch.setattr(features, "FEATURES", {
        "picker": FeatureSpec(config="rpo_verl_demo_ext:DemoConfig", extension="rpo_verl_demo_ext:PickingExtension"),
        "demo": FeatureSpec(config="rpo_verl_demo_ext:DemoConfig", extension="rpo_verl_demo_ext:DemoExtension"),
        "off": FeatureSpec(config="rpo_verl_demo_ext:DemoConfig", extension="rpo_verl_demo_ext:DemoExtension"),
        "swap": FeatureSpec(config="rpo_verl_demo_ext:DemoConfig", extension="rpo_verl_demo_ext:WorkerSwapExtension"),
    })
    import rpo_verl.trainer.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "FEATURES", features.FEATURES)


@pytest.fixture
def make_trainer(tiny_model_path, prompt_files, tmp_path, compose_config):
    """``make_trainer(*overrides, rpo_verl=None)``: a trainer up to its dataloaders (no Ray)."""

    def _make(*overrides, rpo_verl=None):
        return _build(compose_config, tiny_model_path, prompt_files, tmp_path, *overrides, rpo_verl=rpo_verl)

    return _make


def _build(compose, tiny_model_path, prompt_files, tmp_path, *overrides, rpo_verl=None):
    train, val = prompt_files
    cfg = compose("preset=cpu", f"actor_rollout_ref.model.path={tiny_model_path}", f"data.train_files={train}",
                  f"data.val_files={val}", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
                  f"trainer.default_local_dir={tmp_path}/ckpt", *overrides)
    OmegaConf.set_struct(cfg, False)
    # The YAML declares the real features' sections; these tests swap FEATURES for demo ones.
    own_keys = {f.name for f in dataclasses.fields(features.RunConfig)}
    for name in [k for k in cfg.rpo_verl if k not in own_keys and k not in features.FEATURES]:
        del cfg.rpo_verl[name]
    if rpo_verl is not None:
        cfg.rpo_verl = OmegaConf.merge(cfg.rpo_verl, rpo_verl)
    OmegaConf.resolve(cfg)
    trainer = RpoVerlTrainer(cfg)
    trainer._init_tokenizer()
    trainer._init_dataloader()
    trainer._init_dump_executor()  # the first steps of verl's _setup, without the Ray parts
    return trainer


def test_total_epochs_raised_to_fit_total_training_steps(make_trainer, tmp_path):
    # 16 prompts / batch 4 = 4 steps per epoch; 10 steps need 3 epochs or verl's loop stops at 4
    trainer = make_trainer("data.train_batch_size=4",
                           "trainer.total_epochs=1", "trainer.total_training_steps=10")
    assert trainer.steps_per_epoch == 4 and trainer.total_training_steps == 10
    assert trainer.config.trainer.total_epochs == 3


def test_dataset_smaller_than_a_batch_is_a_clear_error(make_trainer, tmp_path):
    with pytest.raises(ValueError, match="data.train_batch_size=32"):
        make_trainer("data.train_batch_size=32",
                     "actor_rollout_ref.actor.ppo_mini_batch_size=32")


def test_resumed_run_that_already_finished_says_so(make_trainer, tmp_path, capsys):
    trainer = make_trainer("data.train_batch_size=4",
                           "trainer.total_training_steps=3")
    trainer.resumed_from_step = 3
    trainer.fit(agent_loop_manager=None)  # returns before verl's loop (which would need Ray)
    out = capsys.readouterr().out
    assert "nothing to train" in out and "trainer.total_training_steps=3" in out
    assert getattr(trainer, "logger", None) is None


def test_extension_hooks_shape_the_prompt_batch(make_trainer, tmp_path, demo_features):
    trainer = make_trainer("data.train_batch_size=4",
                           rpo_verl={"off": {"enable": False}})
    assert [type(e).__name__ for e in trainer.extensions] == ["PickingExtension", "DemoExtension", "WorkerSwapExtension"]
    trainer.global_steps = 5
    batch = trainer._next_train_batch()
    assert len(batch) == 4  # picked 4 of 8 candidates
    assert batch["rpo_tag"].tolist() == [7, 7, 7, 7]
    assert trainer.extensions[1].calls == [("before_rollout", 4)]
    from verl.utils import tensordict_utils as tu

    assert tu.get_non_tensor_data(batch, "global_steps", None) == 5


class RecordingWorkerGroup:
    """Stands in for verl's actor Ray worker group in the checkpoint calls."""

    def __init__(self):
        self.calls = []

    def save_checkpoint(self, local_path, remote_path, global_steps, max_ckpt_to_keep=None):
        os.makedirs(local_path, exist_ok=True)
        self.calls.append(("save", local_path, global_steps))

    def load_checkpoint(self, local_path, del_local_after_load=False):
        self.calls.append(("load", local_path))


def test_extension_state_is_saved_and_restored_with_checkpoints(make_trainer, tmp_path, demo_features):
    trainer = make_trainer("data.train_batch_size=4",
                           rpo_verl={"demo": {"tag": "saved"}})
    trainer.actor_rollout_wg = RecordingWorkerGroup()
    trainer.global_steps = 3
    trainer._save_checkpoint()
    folder = tmp_path / "ckpt" / "global_step_3"
    assert (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").read_text() == "3"
    assert torch.load(folder / EXTENSION_STATE_FILE, weights_only=False)["demo"] == {"tag": "saved", "calls": 0}

    resumed = make_trainer("data.train_batch_size=4")
    resumed.actor_rollout_wg = RecordingWorkerGroup()
    resumed._load_checkpoint()
    assert resumed.global_steps == resumed.resumed_from_step == 3
    assert resumed.actor_rollout_wg.calls == [("load", str(folder / "actor"))]
    demo = next(e for e in resumed.extensions if e.name == "demo")
    assert demo.loaded == {"tag": "saved", "calls": 0}


def test_fresh_start_loads_nothing(make_trainer, tmp_path, demo_features):
    trainer = make_trainer("data.train_batch_size=4")
    trainer.actor_rollout_wg = RecordingWorkerGroup()
    trainer._load_checkpoint()
    assert trainer.global_steps == trainer.resumed_from_step == 0 and trainer.actor_rollout_wg.calls == []


def test_extensions_choose_the_worker_class(make_trainer, demo_features):
    from verl.trainer.ppo.utils import Role
    from verl.workers.engine_workers import ActorRolloutRefWorker

    trainer = make_trainer("data.train_batch_size=4")
    trainer._init_resource_pool_mgr()
    (role,) = trainer.role_worker_mapping  # GRPO without KL: one hybrid actor/rollout worker
    assert role == Role.ActorRollout
    cls = trainer.role_worker_mapping[role].__ray_metadata__.modified_class
    assert cls.__name__ == "DemoActorWorker" and issubclass(cls, ActorRolloutRefWorker)


def test_extension_metrics_outside_the_feature_namespace_are_logged_with_one_warning(make_trainer, demo_features,
                                                                                    monkeypatch, caplog):
    sys.modules["rpo_verl_demo_ext"].MetricsExtension = MetricsExtension
    monkeypatch.setitem(features.FEATURES, "metered", FeatureSpec(
        config="rpo_verl_demo_ext:DemoConfig", extension="rpo_verl_demo_ext:MetricsExtension", metrics="metered"))
    trainer = make_trainer("data.train_batch_size=4")
    trainer.extensions = [e for e in trainer.extensions if e.name == "metered"]
    with caplog.at_level("WARNING", logger="rpo_verl.trainer.trainer"):
        assert trainer.extension_metrics() == {"metered/a": 1.0, "eff/b": 2.0, "rpo/c": 3.0}
        assert trainer.extension_metrics() == {"metered/a": 1.0, "eff/b": 2.0, "rpo/c": 3.0}
    warnings = [r.getMessage() for r in caplog.records if "outside its namespace" in r.getMessage()]
    assert len(warnings) == 1 and "rpo_verl.metered" in warnings[0] and "['rpo/c']" in warnings[0]


def test_trainer_provides_what_the_extension_protocol_promises(make_trainer):
    """trainer/extension.py types the trainer as a Protocol (no import of the trainer): the real
    trainer must have every member it names (the step counter and worker groups are set by verl's
    init(), which needs Ray)."""
    from rpo_verl.trainer.extension import Trainer

    trainer = make_trainer("data.train_batch_size=4")
    methods = [n for n, v in vars(Trainer).items() if callable(v) and not n.startswith("__")]
    assert methods and all(callable(getattr(trainer, n, None)) for n in methods)
    attributes = [n for n in Trainer.__annotations__ if n not in ("actor_rollout_wg", "global_steps")]
    assert attributes
    assert all(hasattr(trainer, n) for n in attributes), [n for n in attributes if not hasattr(trainer, n)]


def test_replay_buffer_polls_at_rpo_verl_sample_poll_s(make_trainer):
    # verl's sync replay buffer polls every 2.0 s by default, which rounds each rollout phase up
    # to a multiple of 2 s; the trainer sets rpo_verl.sample_poll_s on the buffer verl built.
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

    assert ReplayBuffer.__init__.__defaults__ is not None and 2.0 in ReplayBuffer.__init__.__defaults__
    trainer = make_trainer()
    assert isinstance(trainer.replay_buffer, ReplayBuffer) and trainer.replay_buffer.poll_interval == 0.1
    trainer = make_trainer(rpo_verl={"sample_poll_s": 0.5})
    assert trainer.replay_buffer.poll_interval == 0.5
