#!/bin/sh
# The image's entry point: `jaxtrade` with the container's arguments.
#   docker run IMAGE train env.num_envs=4096     -> jaxtrade train env.num_envs=4096
#   docker run IMAGE jaxtrade cloud agent ...    -> jaxtrade cloud agent ...
# A leading "jaxtrade" is dropped, so a start command written as a whole command line (as a
# RunPod pod's start command is) runs the same as one written as arguments.
set -e
if [ "${1:-}" = "jaxtrade" ]; then
    shift
fi
exec jaxtrade "$@"
