"""What failed, why, on which input: a failure of any Ray worker or actor as one short report.

A run's failure reaches the driver as a chain of Ray errors: ``RayTaskError`` (a task raised; its
``cause`` is the original exception, itself possibly a ``RayTaskError`` of a deeper call) and
``RayActorError`` / ``ActorDiedError`` (an actor's process died; its message names the actor's
class). ``describe`` walks that chain to the innermost error and names the component it came from
(``COMPONENTS``: verl's and rpo_verl's actor classes; each feature adds its own through
``FeatureSpec.components`` in ``rpo_verl/config/features.py``). ``FailureReport.message`` is what
the driver prints last, before exiting with ``EXIT_CODE`` (see ``rpo_verl/trainer/failure_watch.py``
and docs/failures.md). Ray is imported lazily: this module is plain Python.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import traceback
from typing import Any

from rpo_verl.config.features import FEATURES

EXIT_CODE = 1
CAUSE_CHARS = 300

# Ray actor class name -> what the console calls it. Features add theirs (FeatureSpec.components).
COMPONENTS = {
    "RewardLoopWorker": "reward worker",
    "AgentLoopWorker": "agent loop",
    "AgentLoopWorkerTQ": "agent loop",
    "FailFastAgentLoopWorker": "agent loop",
    "HFRolloutServer": "rollout server (hf)",
    "vLLMHttpServer": "rollout server (vllm)",
    "WorkerDict": "training worker (actor/ref/critic)",
    "RpoVerlTaskRunner": "trainer",
    "TaskRunner": "trainer",
    "TransferQueueController": "TransferQueue",
    "SimpleStorageUnit": "TransferQueue storage",
}


def component_names() -> dict[str, str]:
    """``COMPONENTS`` plus every registered feature's ``FeatureSpec.components``."""
    names = dict(COMPONENTS)
    for spec in FEATURES.values():
        names.update(spec.components)
    return names


@dataclasses.dataclass
class FailureReport:
    component: str  # "reward worker", "RPO cache service", ...
    cause: str  # "ValueError: scorer exploded" (one line)
    item: str = ""  # "prompt index 3, data_source openai/gsm8k, training step 2"; "" when unknown
    pid: int | None = None  # the failing process, where known (its Ray log file is named after it)
    details: str = ""  # the full traceback text, for the failure log file

    def message(self, log_paths: list[str]) -> str:
        lines = [f"rpo_verl: the run stopped: the {self.component} failed.", f"  cause: {self.cause}"]
        if self.item:
            lines.append(f"  input: {self.item}")
        if log_paths:
            lines.append("  full log: " + "; ".join(log_paths))
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def one_line(text: str, limit: int = CAUSE_CHARS) -> str:
    """The first non-empty line of ``text``, at most ``limit`` characters."""
    line = next((part.strip() for part in str(text).splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _actor_died_fields(text: str) -> dict[str, str]:
    """``class_name``/``pid``/``name`` lines of Ray's ``ActorDiedError`` message, plus its reason."""
    fields = dict(re.findall(r"^\s*(class_name|pid|name): (\S+)\s*$", text, flags=re.MULTILINE))
    reason = re.search(r"^\s*(The actor is dead because[^\n]*)", text, flags=re.MULTILINE)
    if reason:
        fields["reason"] = reason.group(1)
    return fields


_TASK_ORIGIN = re.compile(r"ray::(?:[^\s:()]+:)?([A-Za-z_]\w*)\.\w+\(\)(?:\x1b\[\d+m)?(?:\s*\(pid=(\d+))?")


def _task_origin(err: BaseException) -> tuple[str, int | None]:
    """(actor class, pid) of the innermost task a Ray error passed through. Ray flattens a chain of
    task errors into one whose text repeats ``ray::[name:]Class.method() (pid=...`` per level, the
    innermost last (its ``RayTaskError(<cause>)`` classes also lack ``function_name``/``pid``)."""
    matches = _TASK_ORIGIN.findall(str(err))
    if matches:
        cls, pid = matches[-1]
        return cls, int(pid) if pid else None
    parts = str(err.__dict__.get("function_name") or "").split(".")
    return (parts[-2] if len(parts) >= 2 else ""), err.__dict__.get("pid")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def feature_of_traceback(text: str) -> str | None:
    """The feature (``rpo_verl/<name>/``, a ``FEATURES`` name) of the innermost rpo_verl frame."""
    folders = re.findall(r'File "[^"]*/rpo_verl/([A-Za-z0-9_]+)/[^"]+\.py"', text or "")
    for folder in reversed(folders):
        if folder in FEATURES:
            return folder
    return None


def describe(exc: BaseException, default_component: str = "trainer", item: str = "") -> FailureReport:
    """The innermost error of ``exc``'s Ray error chain, with the component it came from."""
    from ray.exceptions import RayActorError, RayTaskError

    names = component_names()
    component, pid, tb_text = default_component, None, ""
    details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    current: BaseException = exc
    for _ in range(20):  # a chain is a few levels deep; the bound only guards a cycle
        if isinstance(current, RayTaskError):
            cls, task_pid = _task_origin(current)
            component = names.get(cls, f"Ray actor {cls}" if cls else component)
            pid = task_pid or pid
            tb_text = current.__dict__.get("traceback_str") or str(current)
            cause = current.__dict__.get("cause")
            if cause is None or cause is current:
                break
            current = cause
            continue
        if isinstance(current, RayActorError):
            text = str(current)
            if "raised in its creation task" in text:  # __init__ raised: the text holds that task's error
                cls, task_pid = _task_origin(current)
                component = names.get(cls, f"Ray actor {cls}" if cls else component)
                return FailureReport(component, one_line(f"{_last_line(text)} (while starting)"), item,
                                     task_pid or pid, details)
            fields = _actor_died_fields(text)
            cls = fields.get("class_name", "")
            component = names.get(cls, f"Ray actor {cls}" if cls else component)
            pid = int(fields["pid"]) if fields.get("pid", "").isdigit() else pid
            reason = fields.get("reason") or one_line(text)
            return FailureReport(component, one_line(f"{type(current).__name__}: {reason}"), item, pid, details)
        break
    if component in ("trainer", default_component):
        feature = feature_of_traceback(tb_text or details)
        if feature:
            component = f"{component} (rpo_verl.{feature})"
    cause_text = f"{type(current).__name__}: {one_line(str(current)) or '(no message)'}"
    return FailureReport(component, one_line(cause_text), item, pid, details)


def item_description(kwargs: dict, trajectory: dict | None = None) -> str:
    """'prompt index 3, data_source openai/gsm8k, training step 2' from an agent loop's kwargs."""
    parts = []
    extra = kwargs.get("extra_info")
    extra = extra if isinstance(extra, dict) else {}
    index = kwargs.get("index", extra.get("index"))
    if index is not None:
        parts.append(f"prompt index {_plain(index)}")
    if kwargs.get("data_source") is not None:
        parts.append(f"data_source {_plain(kwargs['data_source'])}")
    if trajectory:
        kind = "validation" if trajectory.get("validate") else "training"
        if trajectory.get("step") is not None:
            parts.append(f"{kind} step {trajectory['step']}")
    return ", ".join(parts)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def ray_log_paths(pid: int | None) -> list[str]:
    """The failing process's Ray log files (when on this node), else Ray's session log folder."""
    logs_dir = None
    try:
        import ray

        node = ray._private.worker._global_node  # no public API gives the session folder
        logs_dir = node.get_logs_dir_path() if node is not None else None
    except (ImportError, AttributeError):
        pass
    logs_dir = logs_dir or "/tmp/ray/session_latest/logs"
    if pid:
        files = sorted(glob.glob(os.path.join(logs_dir, f"worker-*-{pid}.err")))  # its tracebacks
        if files:
            return files[-1:]
    return [f"Ray's logs in {logs_dir}"]
