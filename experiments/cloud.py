"""`jaxtrade cloud sweep|status|stop|agent`: W&B sweeps run by RunPod pods, one command.

`cloud sweep` takes the axes `jaxtrade sweep` takes (the `sweep=` group's grid or random
ranges, comma lists on agent.hparams.* and on any other key) and turns them into one W&B
sweep: every combination is one W&B run, i.e. one `jaxtrade train` process on a pod. It
then starts the pods; each runs `jaxtrade cloud agent` (a `wandb agent --count K` under a
deadline) and terminates itself when done. The launch is recorded locally (without secrets)
for `cloud status` and `cloud stop`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import shlex
import sys
from collections.abc import Callable, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import yaml

from jaxtrade.cloud import SECRET_ENV, CloudError, require_env
from jaxtrade.errors import ConfigError
from jaxtrade.logging import plural

IMAGE_REPOSITORY = "ghcr.io/jaxtrade/jaxtrade"  # `make docker` builds and tags this name


def default_image() -> str:
    try:
        version = importlib_metadata.version("jaxtrade")
    except importlib_metadata.PackageNotFoundError:
        version = "latest"
    return f"{IMAGE_REPOSITORY}:{version}"


HELP = f"""usage: jaxtrade cloud <command> [options]

commands:
  sweep    create a W&B sweep from sweep overrides and launch RunPod pods that run it
  status   list the pods a launch started and what RunPod says about them
  stop     terminate the pods of a launch
  agent    (runs on a pod) wandb agent under a deadline, then the pod terminates itself

examples:
  jaxtrade cloud sweep sweep=lr_ent_grid --gpus 8 --gpu-type "NVIDIA H100 80GB HBM3" --dry-run
  jaxtrade cloud sweep agent.hparams.learning_rate=1e-4,3e-4 env.num_envs=4096 --pods 2 \\
      --gpus 8 --max-hours 4 --network-volume VOLUME_ID
  jaxtrade cloud status
  jaxtrade cloud stop LAUNCH_ID

Needs WANDB_API_KEY and RUNPOD_API_KEY in the environment (passed to the pods, written
nowhere). Default image: {default_image()} (build it with `make docker`).
`jaxtrade cloud <command> --help` describes each command.
"""

# Overrides the cloud sweep sets itself for every run (or that make no sense per run).
_OWNED_KEYS = ("logger", "logger.mode", "logger.project", "logger.entity")


def main(argv: Sequence[str]) -> int:
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(HELP)
        return 0 if argv else 2
    commands: dict[str, Callable[[list[str]], int]] = {
        "sweep": sweep_main, "status": status_main, "stop": stop_main, "agent": agent_main}
    if argv[0] not in commands:
        raise ConfigError(f"unknown cloud command {argv[0]!r}; choose one of "
                          f"{', '.join(commands)}")
    return commands[argv[0]](argv[1:])


# ------------------------------------------------------------------------ sweep


def sweep_parser() -> argparse.ArgumentParser:
    from jaxtrade.cloud.runpod_pods import ON_PARTIAL_FAILURE
    from jaxtrade.cloud.wandb_sweep import METHODS

    p = argparse.ArgumentParser(
        prog="jaxtrade cloud sweep",
        description="Create a W&B sweep from the axes `jaxtrade sweep` takes and launch RunPod "
                    "pods that run it (each W&B run is one `jaxtrade train`).",
        epilog="Overrides are key=value as for jaxtrade sweep: sweep=NAME, comma lists "
               "(key=a,b,c) and fixed settings for every run. Each pod terminates itself "
               "when its agent is done or after --max-hours.")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="sweep axes and fixed overrides (see jaxtrade sweep --help)")
    p.add_argument("--gpus", type=int, default=1, help="GPUs per pod (default 1)")
    p.add_argument("--gpu-type", default="NVIDIA H100 80GB HBM3",
                   help="RunPod GPU type id (default: %(default)s)")
    p.add_argument("--pods", type=int, default=1, help="number of pods (default 1)")
    p.add_argument("--count", type=int, default=None,
                   help="runs per pod's agent (default: the sweep's runs / pods, rounded up; "
                        "with --sweep-id: until the sweep is done)")
    p.add_argument("--max-hours", type=float, default=4.0,
                   help="each pod stops its agent and terminates after this long (default 4)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (sweep, pods, image, GPU hours, command); create nothing")
    p.add_argument("--sweep-id", default=None, metavar="ENTITY/PROJECT/ID",
                   help="attach the pods to this existing W&B sweep instead of creating one")
    p.add_argument("--method", choices=METHODS, default=None,
                   help="W&B search method (default: random for sweep groups with ranges, "
                        "else grid)")
    p.add_argument("--run-cap", type=int, default=None,
                   help="most runs for random/bayes (default: random's num_samples x grid)")
    p.add_argument("--project", default=None, help="W&B project (default: logger.project)")
    p.add_argument("--entity", default=None, help="W&B entity (default: logger.entity, "
                                                  "else your default entity)")
    p.add_argument("--name", default=None, help="W&B sweep name")
    p.add_argument("--image", default=default_image(), help="container image (default: "
                                                            "%(default)s)")
    p.add_argument("--network-volume", default=None, metavar="VOLUME_ID",
                   help="RunPod network volume for checkpoints and the compile cache (kept "
                        "after the pods end; without it a pod volume is used and lost)")
    p.add_argument("--volume-gb", type=int, default=50,
                   help="pod volume size without --network-volume (default 50)")
    p.add_argument("--container-disk-gb", type=int, default=30, help="default 30")
    p.add_argument("--cloud-type", choices=("SECURE", "COMMUNITY", "ALL"), default="SECURE",
                   help="RunPod cloud (default SECURE; network volumes need SECURE)")
    p.add_argument("--on-partial-failure", choices=ON_PARTIAL_FAILURE, default="terminate",
                   help="when a pod is refused: terminate the pods already created (default) "
                        "or keep them")
    p.add_argument("--records", type=Path, default=None, metavar="DIR",
                   help="folder of launch records (default: <jaxtrade cache>/cloud)")
    return p


def sweep_axes(overrides: Sequence[str], method: str | None, run_cap: int | None
               ) -> tuple[dict[str, Any], list[str], dict[str, Any], str, int | None]:
    """(W&B parameters, fixed overrides, composed base config, method, run cap).

    The overrides are split exactly as `jaxtrade sweep` splits them; here every axis, vmapped
    or multirun, becomes a W&B parameter, since each W&B run trains one combination.
    """
    from experiments import common
    from experiments.sweep import check_hparam_axes, split_sweep_overrides
    from jaxtrade.cloud.wandb_sweep import parameter_range, parameter_values
    from jaxtrade.config.compose import parse_overrides

    plain, vmapped, multirun = split_sweep_overrides(common.split_flags(overrides))
    cfg = common.compose(plain)
    check_hparam_axes(cfg, vmapped)
    # Each value of a shape-changing axis is composed and validated now, so a typo in a
    # list stops the launch instead of failing on a pod.
    for options in multirun.values():
        for option in options:
            common.compose([*plain, option])
    if int(cfg["train"]["num_seeds"]) != 1:
        raise ConfigError("train.num_seeds must be 1 in a cloud sweep (each W&B run is one "
                          "training run): sweep seeds as an axis, e.g. seed=0,1,2")
    fixed = []
    for text, ov in zip(plain, parse_overrides(plain), strict=True):
        key = ov.key_or_group
        if key == "run_dir":
            raise ConfigError("run_dir is not allowed in a cloud sweep: each run gets its own "
                              "folder on the pod's volume")
        if key == "sweep" or key.startswith("sweep.") or key in _OWNED_KEYS:
            continue
        fixed.append(text)

    group = cfg["sweep"]
    parameters: dict[str, Any] = {}
    for param in group.get("params") or []:
        if param.get("values"):
            parameters[param["key"]] = parameter_values([float(v) for v in param["values"]])
        elif group["method"] == "random":
            parameters[param["key"]] = parameter_range(param["low"], param["high"],
                                                       bool(param.get("log")))
    for key, values in vmapped.items():
        parameters[key] = parameter_values(values)
    for key, options in multirun.items():
        parameters[key] = parameter_values([_typed(o.split("=", 1)[1]) for o in options])

    method = method or ("random" if group["method"] == "random" else "grid")
    if method != "grid" and run_cap is None:
        if group["method"] != "random":
            raise ConfigError(f"--method {method} needs --run-cap N (W&B would otherwise start "
                              "runs without end)")
        grid = math.prod(len(p["values"]) for p in parameters.values() if "values" in p)
        run_cap = int(group["num_samples"]) * grid
    return parameters, fixed, cfg, method, run_cap


def _typed(text: str) -> Any:
    """'32' -> 32 and '1e-4' -> 0.0001 for W&B's tables; anything else stays the string."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else text


def agent_start_command(sweep_path: str, count: int | None, max_hours: float) -> str:
    from jaxtrade.cloud.runpod_pods import MOUNT_PATH

    args = ["jaxtrade", "cloud", "agent", "--sweep-id", sweep_path, "--max-hours",
            f"{max_hours:g}", "--workdir", f"{MOUNT_PATH}/jaxtrade"]
    if count:
        args += ["--count", str(count)]
    return " ".join(args)


def sweep_main(argv: list[str], print_fn: Callable[[str], None] = print) -> int:
    from jaxtrade.cloud import runpod_pods, wandb_sweep

    args = sweep_parser().parse_intermixed_args(argv)
    if args.gpus < 1 or args.pods < 1 or args.max_hours <= 0:
        raise ConfigError("--gpus and --pods must be at least 1 and --max-hours above 0")
    # Keys first: a launch without them must stop before anything is created.
    secrets = None if args.dry_run else require_env(SECRET_ENV)

    parameters, fixed, cfg, method, run_cap = sweep_axes(args.overrides, args.method,
                                                         args.run_cap)
    project = args.project or cfg["logger"]["project"]
    entity = args.entity or cfg["logger"]["entity"]
    config = wandb_sweep.sweep_config(parameters, method, fixed, project=project, entity=entity,
                                      name=args.name, run_cap=run_cap)
    total = wandb_sweep.num_runs(method, parameters, run_cap)
    if args.sweep_id:
        wandb_sweep.check_sweep_path(args.sweep_id)
        count = args.count
    else:
        count = args.count or (math.ceil(total / args.pods) if total else None)
    spec_for = lambda path: runpod_pods.PodSpec(  # noqa: E731
        name_prefix=f"jaxtrade-{path.rsplit('/', 1)[-1]}", image=args.image,
        gpu_type=args.gpu_type, gpus_per_pod=args.gpus, num_pods=args.pods,
        start_command=agent_start_command(path, count, args.max_hours),
        env={"JAXTRADE_CACHE_DIR": f"{runpod_pods.MOUNT_PATH}/jaxtrade/cache"},
        cloud_type=args.cloud_type, container_disk_gb=args.container_disk_gb,
        volume_gb=args.volume_gb, network_volume_id=args.network_volume)

    if args.dry_run:
        path = args.sweep_id or "<ENTITY/PROJECT/ID once created>"
        print_fn(plan_text(spec_for(path), config, path, args, total, count, project, entity))
        return 0

    assert secrets is not None
    path = args.sweep_id or wandb_sweep.create_sweep(config, project, entity)
    if not args.sweep_id:
        print_fn(f"created W&B sweep {path} ({method}, {total or 'unbounded'} runs)")
    spec = spec_for(path)
    result = runpod_pods.launch(spec, secrets, args.on_partial_failure, print_fn)
    record_path = None
    if result.pods:
        record = {
            "launch_id": runpod_pods.new_launch_id(path),
            "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "sweep": path, "sweep_created": not args.sweep_id, "sweep_config": config,
            "image": spec.image, "gpu_type": spec.gpu_type, "gpus_per_pod": spec.gpus_per_pod,
            "max_hours": args.max_hours, "agent_count": count,
            "start_command": spec.start_command,
            "env_names": sorted([*spec.env, *SECRET_ENV]),
            "network_volume_id": spec.network_volume_id, "cloud_type": spec.cloud_type,
            "on_partial_failure": args.on_partial_failure, "failure": result.failure,
            "pods": result.pods,
        }
        record_path = runpod_pods.write_record(record, args.records)
        print_fn(f"launch {record['launch_id']} recorded in {record_path} "
                 "(jaxtrade cloud status / stop)")
    if result.failure:
        if args.on_partial_failure == "terminate" or not result.pods:
            left = (f"; could not terminate {', '.join(result.not_terminated)}: run `jaxtrade "
                    "cloud stop`" if result.not_terminated else "")
            kept = (f"; the W&B sweep {path} stays (attach to it with --sweep-id)"
                    if not args.sweep_id else "")
            raise CloudError(f"{result.failure}; terminated the {plural(len(result.pods), 'pod')} "
                             f"already created{left}{kept}")
        print(f"jaxtrade: warning: {result.failure}; kept the {plural(len(result.pods), 'pod')} "
              f"already created (of {spec.num_pods})", file=sys.stderr)
    print_fn(f"{plural(len(result.pods), 'pod')} x {spec.gpus_per_pod} {spec.gpu_type} running "
             f"{path}; each ends itself within {args.max_hours:g} h")
    return 0


def plan_text(spec: Any, config: dict[str, Any], path: str, args: argparse.Namespace,
              total: int | None, count: int | None, project: str, entity: str | None) -> str:
    import os

    from jaxtrade.cloud.runpod_pods import MOUNT_PATH

    gpu_hours = spec.num_pods * spec.gpus_per_pod * args.max_hours
    volume = (f"network volume {spec.network_volume_id} at {MOUNT_PATH} (kept)"
              if spec.network_volume_id else
              f"pod volume {spec.volume_gb} GB at {MOUNT_PATH} (lost when the pod ends; "
              "--network-volume keeps checkpoints and the compile cache)")
    sweep = (f"attach to {path}" if args.sweep_id else
             f"create in {entity or '<your default entity>'}/{project}")
    run = [c for c in config["command"] if c not in ("${env}", "${args_no_hyphens}")]
    env = [f"{k}" for k in spec.env] + [
        f"{k} ({'set' if os.environ.get(k) else 'MISSING: export it before launching'})"
        for k in SECRET_ENV]
    lines = [
        "cloud sweep plan (dry run: nothing created, nothing launched)",
        f"  W&B sweep:  {sweep}: method {config['method']}, "
        f"{total if total else 'unbounded'} runs, metric {config['metric']['name']} "
        f"({config['metric']['goal']})",
        f"  pods:       {spec.num_pods} x {spec.gpus_per_pod} {spec.gpu_type} "
        f"({spec.cloud_type} cloud), image {spec.image}",
        f"  volume:     {volume}",
        f"  GPU hours:  at most {gpu_hours:g} ({plural(spec.num_pods, 'pod')} x "
        f"{plural(spec.gpus_per_pod, 'GPU')} "
        f"x {args.max_hours:g} h)",
        f"  each pod:   {spec.start_command}"
        + ("" if count else "  (no --count: until the sweep is done)"),
        f"  each run:   {shlex.join(run)} <parameters as key=value>",
        f"  pod env:    {', '.join(env)}",
        "W&B sweep config:",
        yaml.safe_dump(config, sort_keys=False).rstrip(),
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------ status / stop


def _records_parser(prog: str, description: str, launch_required: bool
                    ) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("launch_id", nargs=None if launch_required else "?", metavar="LAUNCH_ID",
                   help="a launch id as `jaxtrade cloud sweep` printed it"
                   + ("" if launch_required else " (default: every recorded launch)"))
    p.add_argument("--records", type=Path, default=None, metavar="DIR",
                   help="folder of launch records (default: <jaxtrade cache>/cloud)")
    return p


def status_main(argv: list[str], print_fn: Callable[[str], None] = print) -> int:
    from jaxtrade.cloud import runpod_pods

    args = _records_parser("jaxtrade cloud status", "List the pods of recorded launches and "
                           "their state on RunPod.", launch_required=False).parse_args(argv)
    records = runpod_pods.read_records(args.records, args.launch_id)
    if not records:
        print_fn(f"no launches recorded in {args.records or runpod_pods.records_dir()}")
        return 0
    key = require_env(("RUNPOD_API_KEY",))["RUNPOD_API_KEY"]
    for record in records:
        live = [p["id"] for p in record["pods"] if p["status"] != "terminated"]
        states = runpod_pods.pod_status(live, key) if live else {}
        print_fn(f"{record['launch_id']}: sweep {record['sweep']}, "
                 f"{plural(len(record['pods']), 'pod')} "
                 f"x {record['gpus_per_pod']} {record['gpu_type']}, launched "
                 f"{record['created_utc']}, max {record['max_hours']:g} h")
        for pod in record["pods"]:
            if pod["id"] in states:
                state = states[pod["id"]]
                pod["status"] = "terminated" if state is None else str(
                    state.get("desiredStatus") or "unknown").lower()
                extra = "" if state is None else (
                    f", up {int(state.get('uptimeSeconds') or 0) // 60} min, "
                    f"${float(state.get('costPerHr') or 0):.2f}/h")
            else:
                extra = ""
            print_fn(f"  {pod['id']:<16} {pod['name']:<28} {pod['status']}{extra}")
        runpod_pods.write_record(record, args.records)
    return 0


def stop_main(argv: list[str], print_fn: Callable[[str], None] = print) -> int:
    from jaxtrade.cloud import runpod_pods

    args = _records_parser("jaxtrade cloud stop", "Terminate every pod a launch started (the "
                           "W&B sweep and the network volume stay).",
                           launch_required=True).parse_args(argv)
    record = runpod_pods.read_records(args.records, args.launch_id)[0]
    key = require_env(("RUNPOD_API_KEY",))["RUNPOD_API_KEY"]
    live = [p for p in record["pods"] if p["status"] != "terminated"]
    outcome = runpod_pods.terminate([p["id"] for p in live], key)
    failed = []
    for pod in live:
        if outcome[pod["id"]] is None:
            pod["status"] = "terminated"
            print_fn(f"terminated pod {pod['id']} ({pod['name']})")
        else:
            failed.append(f"{pod['id']} ({outcome[pod['id']]})")
    runpod_pods.write_record(record, args.records)
    if not live:
        print_fn(f"launch {record['launch_id']}: no pods left to terminate")
    if failed:
        raise CloudError(f"could not terminate {', '.join(failed)}; run the command again")
    return 0


# ------------------------------------------------------------------------ agent (on a pod)


def agent_main(argv: list[str], print_fn: Callable[[str], None] = print) -> int:
    from jaxtrade.cloud.agent import run_agent
    from jaxtrade.cloud.wandb_sweep import check_sweep_path

    p = argparse.ArgumentParser(
        prog="jaxtrade cloud agent",
        description="Run on a cloud machine: `wandb agent [--count K] SWEEP` in its own folder "
                    "under --workdir, stopped after --max-hours; then, on RunPod "
                    "($RUNPOD_POD_ID set), the pod terminates itself.")
    p.add_argument("--sweep-id", required=True, metavar="ENTITY/PROJECT/ID")
    p.add_argument("--count", type=int, default=None, help="runs to take from the sweep")
    p.add_argument("--max-hours", type=float, required=True)
    p.add_argument("--workdir", type=Path, default=Path("jaxtrade-cloud"),
                   help="folder for run directories and the compile cache (a mounted volume)")
    p.add_argument("--no-terminate", action="store_true",
                   help="do not terminate the pod at the end (SkyPilot and local runs)")
    args = p.parse_args(argv)
    return run_agent(check_sweep_path(args.sweep_id), args.count, args.max_hours,
                     args.workdir.expanduser().resolve(), terminate=not args.no_terminate,
                     print_fn=print_fn)
