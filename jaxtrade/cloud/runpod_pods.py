"""RunPod pods for a cloud sweep: launch (all or nothing, unless asked), status, stop, record.

Every call goes through the runpod SDK, whose GraphQL endpoint is
`$RUNPOD_API_BASE_URL/graphql` (tests point it at a local fake server). The SDK's
`terminate_pod` reads the module-level `runpod.api_key`, so the key is set there for the
duration of a call and put back afterwards.

The launch record (`<cache>/cloud/<launch id>.json`, see `jaxtrade.paths.cache_dir`) names
what was launched so `jaxtrade cloud status|stop` can find it; it holds the names of the
environment variables passed to the pods, never their values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from jaxtrade.cloud import SECRET_ENV, CloudError

MOUNT_PATH = "/workspace"  # network volume (or pod volume) mount: checkpoints, compile cache
ON_PARTIAL_FAILURE = ("terminate", "keep")


@dataclasses.dataclass(frozen=True)
class PodSpec:
    """What every pod of one launch gets (secrets are not part of it)."""

    name_prefix: str
    image: str
    gpu_type: str
    gpus_per_pod: int
    num_pods: int
    start_command: str
    env: Mapping[str, str]
    cloud_type: str = "SECURE"
    container_disk_gb: int = 30
    volume_gb: int = 50
    network_volume_id: str | None = None

    def pod_names(self) -> list[str]:
        return [f"{self.name_prefix}-{i}" for i in range(self.num_pods)]


@dataclasses.dataclass
class LaunchResult:
    pods: list[dict[str, Any]]          # {"id", "name", "status"} for each created pod
    failure: str | None = None          # the provider's message for the refused pod
    not_terminated: list[str] = dataclasses.field(default_factory=list)


def records_dir() -> Path:
    from jaxtrade.paths import cache_dir

    return cache_dir() / "cloud"


@contextlib.contextmanager
def runpod_session(api_key: str) -> Iterator[Any]:
    try:
        import runpod
    except ImportError:
        raise CloudError("the runpod SDK is not installed: pip install 'jaxtrade[cloud]'"
                         ) from None
    previous = runpod.api_key
    runpod.api_key = api_key
    try:
        yield runpod
    finally:
        runpod.api_key = previous


def _message(err: BaseException) -> str:
    # runpod's QueryError keeps the GraphQL text (which holds the env values) in `.query`;
    # only the server's message is shown.
    text = getattr(err, "message", None) or str(err) or type(err).__name__
    return str(text).splitlines()[0]


def _check_safe(label: str, value: str) -> None:
    if any(c in value for c in '"\\\n'):
        raise CloudError(f"{label} must not contain quotes, backslashes or newlines: {value!r}")


def launch(spec: PodSpec, secrets: Mapping[str, str], on_partial_failure: str = "terminate",
           print_fn: Callable[[str], None] = print) -> LaunchResult:
    """Create `spec.num_pods` pods one after another.

    If one is refused, the pods already created are terminated (`terminate`, the default)
    or kept (`keep`); either way the result lists every pod created, so nothing is lost
    track of.
    """
    if on_partial_failure not in ON_PARTIAL_FAILURE:
        raise CloudError(f"--on-partial-failure {on_partial_failure!r} is not allowed: choose "
                         f"one of {', '.join(ON_PARTIAL_FAILURE)}")
    for label, value in [("start command", spec.start_command), ("image", spec.image),
                         *[(f"env {k}", v) for k, v in spec.env.items()]]:
        _check_safe(label, value)
    env = {**spec.env, **{k: secrets[k] for k in SECRET_ENV if k in secrets}}
    result = LaunchResult(pods=[])
    with runpod_session(secrets["RUNPOD_API_KEY"]) as runpod:
        for name in spec.pod_names():
            try:
                pod = runpod.create_pod(
                    name=name, image_name=spec.image, gpu_type_id=spec.gpu_type,
                    gpu_count=spec.gpus_per_pod, cloud_type=spec.cloud_type,
                    container_disk_in_gb=spec.container_disk_gb,
                    volume_in_gb=0 if spec.network_volume_id else spec.volume_gb,
                    network_volume_id=spec.network_volume_id, volume_mount_path=MOUNT_PATH,
                    docker_args=spec.start_command, env=env, support_public_ip=True,
                    start_ssh=True)
            except Exception as err:  # noqa: BLE001 (any refusal is a partial failure)
                result.failure = f"pod {name} was refused: {_message(err)}"
                break
            if not pod or not pod.get("id"):
                result.failure = f"pod {name} was refused: RunPod returned no pod"
                break
            result.pods.append({"id": pod["id"], "name": name, "status": "created"})
            print_fn(f"created pod {pod['id']} ({name})")
        if result.failure and on_partial_failure == "terminate":
            for pod in result.pods:
                try:
                    runpod.terminate_pod(pod["id"])
                    pod["status"] = "terminated"
                except Exception as err:  # noqa: BLE001
                    result.not_terminated.append(pod["id"])
                    print_fn(f"could not terminate pod {pod['id']}: {_message(err)}")
    return result


def pod_status(pod_ids: list[str], api_key: str) -> dict[str, dict[str, Any] | None]:
    """RunPod's view of each pod (None: the pod no longer exists)."""
    out: dict[str, dict[str, Any] | None] = {}
    with runpod_session(api_key) as runpod:
        for pod_id in pod_ids:
            try:
                out[pod_id] = runpod.get_pod(pod_id)
            except Exception as err:  # noqa: BLE001
                raise CloudError(f"RunPod could not report pod {pod_id}: {_message(err)}"
                                 ) from None
    return out


def terminate(pod_ids: list[str], api_key: str) -> dict[str, str | None]:
    """Terminate each pod; the value is None on success, else RunPod's message."""
    out: dict[str, str | None] = {}
    with runpod_session(api_key) as runpod:
        for pod_id in pod_ids:
            try:
                runpod.terminate_pod(pod_id)
                out[pod_id] = None
            except Exception as err:  # noqa: BLE001
                out[pod_id] = _message(err)
    return out


# ------------------------------------------------------------------------ the launch record


def new_launch_id(sweep_path: str) -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{sweep_path.rsplit('/', 1)[-1]}-{stamp}"


def write_record(record: Mapping[str, Any], directory: Path | None = None) -> Path:
    directory = directory or records_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{record['launch_id']}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def read_records(directory: Path | None = None, launch_id: str | None = None
                 ) -> list[dict[str, Any]]:
    directory = directory or records_dir()
    if launch_id is not None:
        path = directory / f"{launch_id}.json"
        if not path.is_file():
            known = sorted(p.stem for p in directory.glob("*.json")) if directory.is_dir() else []
            raise CloudError(f"no launch {launch_id!r} in {directory} (known: "
                             f"{', '.join(known) or 'none'})")
        return [json.loads(path.read_text())]
    if not directory.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]
