"""Cloud sweeps: a W&B sweep as the controller, RunPod pods as the workers.

    wandb_sweep   the W&B sweep config (parameters, metric, the `jaxtrade train` command)
                  and its creation through the wandb API
    runpod_pods   pod launch (with rollback on a partial failure), status and stop through
                  the runpod SDK, and the local launch record
    agent         what a pod runs: `wandb agent` under a deadline, then the pod ends itself

Secrets (WANDB_API_KEY, RUNPOD_API_KEY) travel only from this process's environment into the
pods' environment; no config, record, log line or W&B config holds them.
"""

from __future__ import annotations

from jaxtrade.errors import JaxTradeError

SECRET_ENV = ("WANDB_API_KEY", "RUNPOD_API_KEY")


class CredentialsError(JaxTradeError):
    """A key the cloud commands need is missing from the environment."""

    exit_code = 2


class CloudError(JaxTradeError):
    """A provider refused or failed a request (said in one line, without secrets)."""

    exit_code = 1


def require_env(names: tuple[str, ...], environ: dict[str, str] | None = None) -> dict[str, str]:
    """The values of `names` from the environment; the first missing one is one clear error."""
    import os

    environ = dict(os.environ) if environ is None else environ
    values = {}
    for name in names:
        value = environ.get(name, "").strip()
        if not value:
            hint = {"WANDB_API_KEY": "your W&B key (wandb.ai/authorize); the pods log runs with "
                                     "it, so `wandb login` on this machine is not enough",
                    "RUNPOD_API_KEY": "a RunPod API key (RunPod console, Settings > API Keys)"}
            raise CredentialsError(f"{name} is not set: export {name}=<{hint.get(name, 'key')}>"
                                   " and run again (nothing was launched)")
        # The runpod SDK writes env values into its GraphQL text unescaped.
        if any(c in value for c in '"\\\n'):
            raise CredentialsError(f"{name} contains a quote, backslash or newline; that is not "
                                   "a valid key (nothing was launched)")
        values[name] = value
    return values
