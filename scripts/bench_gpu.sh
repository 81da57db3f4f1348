#!/usr/bin/env bash
# The prepared GPU benchmark: one command on a machine with a GPU, under 8 minutes, one JSON.
#
# It runs the project's own benchmark scripts with GPU sizes and gathers their figures:
#   env        scripts/bench_env.py --envs 65536          env-steps/s of the default config
#   train      scripts/bench_train.py                     PPO like for like; 1 vs 16 vs 64
#                                                         vmapped seeds; default PPO config
#                                                         at 4,096 envs
#   sweep_eval scripts/bench_backtest.py                  a sweep's evaluation phase
#   agent_<n>  scripts/bench_train.py --override agent=<n> each agent in agents.AGENTS other
#                                                         than ppo/cvar_ppo (so agents added
#                                                         later are measured too)
# Each part runs under a time limit within an overall budget; a part that fails or runs out
# of time is recorded with its exit code and the end of its log, and the others still run.
# The JSON (scripts/gpu_bench_collect.py) also checks the goals: env >= 1e8 steps/s,
# PPO >= 5e6 env-steps/s, 64 seeds <= 2x the wall time of 1.
set -uo pipefail

usage() {
    cat <<'EOF'
usage: scripts/bench_gpu.sh [--out FILE] [--budget-s SECONDS] [--cpu-smoke]

  --out FILE        where to write the JSON (default bench_gpu.json)
  --budget-s S      overall time budget in seconds (default 470; --cpu-smoke 900)
  --cpu-smoke       tiny sizes on the CPU: checks the script end to end without a GPU
  -h, --help        this help

Needs the project installed with its GPU and test extras: pip install -e '.[cuda,dev]'.
PYTHON=/path/to/python picks the interpreter (default .venv/bin/python, else python3).
EOF
}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
COMMAND="scripts/bench_gpu.sh $*"
OUT=bench_gpu.json
SMOKE=0
BUDGET=""
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT=$2; shift 2 ;;
        --budget-s) BUDGET=$2; shift 2 ;;
        --cpu-smoke) SMOKE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench_gpu.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi

if [ "$SMOKE" = 1 ]; then
    MODE=cpu-smoke
    export JAX_PLATFORMS=cpu
    BUDGET=${BUDGET:-900}
    ENV_ARGS=(--quick --envs 64 --loop-seconds 0.2 --bandwidth-mb 16)
    TRAIN_ARGS=(--skip-sb3 --skip-like --seeds 2 --jax-updates 4 --default-updates 1
                --override env.num_envs=16)
    EVAL_ARGS=(--quick)
    AGENT_ARGS=(--default-updates 1 --override env.num_envs=16)
    LIMIT_ENV=300; LIMIT_TRAIN=300; LIMIT_EVAL=300; LIMIT_AGENT=200
else
    MODE=gpu
    export JAX_PLATFORMS=cuda
    BUDGET=${BUDGET:-470}
    if ! "$PY" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null; then
        echo "bench_gpu.sh: JAX sees no GPU (install with pip install -e '.[cuda,dev]'); to" \
             "check the script on a CPU use --cpu-smoke" >&2
        exit 2
    fi
    ENV_ARGS=(--envs 65536)
    TRAIN_ARGS=(--skip-sb3 --seeds 16 64 --override env.num_envs=4096)
    EVAL_ARGS=()
    AGENT_ARGS=(--default-updates 64 --override env.num_envs=4096)
    LIMIT_ENV=100; LIMIT_TRAIN=150; LIMIT_EVAL=100; LIMIT_AGENT=60
fi

PARTS=$(mktemp -d)
trap 'rm -rf "$PARTS"' EXIT
START=$(date +%s)
DEADLINE=$((START + BUDGET))

# run_part NAME LIMIT_S COMMAND...: stdout+stderr to NAME.log, exit code and time to
# NAME.status; skipped when the budget is spent.
run_part() {
    local name=$1 limit=$2
    shift 2
    local left=$((DEADLINE - $(date +%s)))
    if [ "$left" -lt 15 ]; then
        printf '{"rc": null, "seconds": 0, "limit_s": 0, "skipped": "budget spent"}\n' \
            > "$PARTS/$name.status"
        echo "[$name] skipped: budget spent"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    local t0 ms rc
    t0=$(date +%s%N)
    timeout --kill-after=10 "$limit" "$@" > "$PARTS/$name.log" 2>&1
    rc=$?
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    printf '{"rc": %d, "seconds": %d.%03d, "limit_s": %d}\n' "$rc" $((ms / 1000)) \
        $((ms % 1000)) "$limit" > "$PARTS/$name.status"
    echo "[$name] exit $rc after $((ms / 1000)) s (limit $limit s)"
}

cd "$ROOT" || exit 1
echo "bench_gpu.sh ($MODE): budget $BUDGET s, results -> $OUT"
run_part env "$LIMIT_ENV" "$PY" scripts/bench_env.py "${ENV_ARGS[@]}" --json "$PARTS/env.json"
run_part train "$LIMIT_TRAIN" "$PY" scripts/bench_train.py "${TRAIN_ARGS[@]}" \
    --json "$PARTS/train.json"
run_part sweep_eval "$LIMIT_EVAL" "$PY" scripts/bench_backtest.py "${EVAL_ARGS[@]}"
OTHERS=$("$PY" -c "import agents; print(' '.join(a for a in agents.AGENTS
                                                 if a not in ('ppo', 'cvar_ppo')))")
for agent in $OTHERS; do
    run_part "agent_$agent" "$LIMIT_AGENT" "$PY" scripts/bench_train.py --skip-sb3 --skip-like \
        --skip-seeds "${AGENT_ARGS[@]}" --override "agent=$agent" \
        --json "$PARTS/agent_$agent.json"
done
"$PY" scripts/gpu_bench_collect.py --parts "$PARTS" --out "$OUT" --mode "$MODE" \
    --command "$COMMAND" --elapsed-s "$(( $(date +%s) - START ))"
