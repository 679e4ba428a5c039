"""Known-irrelevant warnings and log records, silenced at their source in every process.

Each entry of ``KNOWN_NOISE`` drops exactly one message: a Python warning (``warnings`` filter on
the category, the warning's module and a message regex) or a log record (a ``logging.Filter`` on
the named logger, matching the message regex). Nothing else from those modules or loggers is
hidden, and there is no blanket filter. The same table is in docs/console.md with the reasons.

``install()`` is idempotent and imports nothing heavy (no torch, verl or Ray). It runs in every
process of a run: rpo_verl's verl plugin calls it (verl imports the plugin in every process that
imports verl), and ``launch`` names it as Ray's ``worker_process_setup_hook`` so that Ray workers
that never import verl (TransferQueue's storage units and controller) get it too.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import warnings


@dataclasses.dataclass(frozen=True)
class Noise:
    kind: str  # "warning" (warnings.warn) or "log" (a logging record)
    source: str  # the warning's module (regex, as warnings.filterwarnings takes it) or the logger's name
    message: str  # regex matched at the start of the message
    reason: str  # why it is irrelevant to an rpo_verl run
    category: type[Warning] = UserWarning


KNOWN_NOISE: tuple[Noise, ...] = (
    Noise("warning", r"verl\.workers\.engine",
          r"(torchtitan|veomni|automodel|mindspeed|megatron) engine is not available",
          "verl probes optional training engines at import; rpo_verl trains with FSDP/FSDP2, and a run "
          "that selects a missing engine still fails when verl looks the engine up"),
    Noise("warning", r"verl\.trainer\.ppo\.", r"Disabled critic as algorithm\.adv_estimator != gae",
          "GRPO/DAPO have no critic by design; verl repeats this at every trainer construction"),
    Noise("warning", r"torchdata\.stateful_dataloader", r"'set_vital' is deprecated",
          "torchdata calls a deprecated torch API inside its dataloader; nothing a user can change"),
    Noise("warning", r"ray\.runtime_context", r"This API is deprecated and may be removed in future Ray releases",
          "Ray's own was_current_actor_reconstructed reads its deprecated actor_id property (Ray 2.60); "
          "only warnings raised inside ray/runtime_context.py match", category=DeprecationWarning),
    Noise("log", "verl.utils.tokenizer.continuous_token_wiring",
          r"No model-specific Continuous Token builder is registered",
          "logged once per rollout sample (16+ lines per step): models without a dedicated builder "
          "(Llama/SmolLM2) use verl's generic one, which is correct for text-only models"),
    Noise("log", "transfer_queue.utils.common", r"target_num_threads \d+ should not exceed total physical CPU cores",
          "TransferQueue asks for 8 threads per call and clamps to the cores present; repeated "
          "dozens of times per step on machines with fewer than 8 cores"),
    Noise("log", "transfer_queue.utils.perf_utils", r"\S+: \[Performance\] Total success requests",
          "TransferQueue's periodic request statistics (3 lines per TransferQueue actor every few "
          "minutes, INFO level): internal counters of verl's data plane, not a run's progress"),
    Noise("log", "transformers.tokenization_utils_tokenizers",
          r"Ignoring clean_up_tokenization_spaces=True for BPE tokenizer",
          "transformers already does the right thing (no clean-up for BPE tokenizers such as SmolLM2's)"),
    Noise("log", "torch.fx._symbolic_trace", r"is_fx_tracing will return true for both",
          "an API-deprecation notice triggered inside torch/transformers code, not by rpo_verl or the user"),
    Noise("log", "ray._private.worker", r"Using blocking ray\.get inside async actor",
          "verl's agent-loop and training workers call ray.get from async actors by design"),
)


class _MessageFilter(logging.Filter):
    """Drops the records of one logger whose message matches one regex."""

    def __init__(self, noise: Noise):
        super().__init__()
        self.noise = noise
        self.pattern = re.compile(noise.message)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not ours to judge: keep it
            return True
        return not self.pattern.match(message)


def install() -> None:
    """Install every ``KNOWN_NOISE`` filter in this process (idempotent)."""
    for noise in KNOWN_NOISE:
        if noise.kind == "warning":
            warnings.filterwarnings("ignore", message=noise.message, category=noise.category, module=noise.source)
        else:
            target = logging.getLogger(noise.source)
            if not any(isinstance(f, _MessageFilter) and f.noise == noise for f in target.filters):
                target.addFilter(_MessageFilter(noise))
