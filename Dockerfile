# jaxtrade on CUDA 12: `docker run --gpus all IMAGE train env.num_envs=65536 ...`
# Build with `make docker` (tags ghcr.io/jaxtrade/jaxtrade:<version>, the image
# `jaxtrade cloud sweep` launches by default).
#
# The base pins the Ubuntu release and CUDA 12 user-space; the CUDA libraries JAX needs
# (cuBLAS, cuDNN, ...) come as pip wheels with the `cuda` extra (jax[cuda12]), and the driver
# from the host.
FROM nvidia/cuda:12.6.3-base-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Versions follow the pinned base image's Ubuntu release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "$VIRTUAL_ENV"

# An editable install keeps configs/ and scripts/ beside the packages, where the CLI finds
# them (Hydra configs, `jaxtrade bench`).
WORKDIR /opt/jaxtrade
COPY pyproject.toml README.md ./
COPY jaxtrade ./jaxtrade
COPY agents ./agents
COPY envs ./envs
COPY experiments ./experiments
COPY configs ./configs
COPY scripts ./scripts
RUN pip install -e ".[cuda,cloud]"

# Runs, checkpoints and the compilation cache land in /workspace (RunPod mounts its volume
# there; elsewhere mount one: -v "$PWD/work:/workspace").
ENV JAXTRADE_CACHE_DIR=/workspace/jaxtrade/cache
WORKDIR /workspace
ENTRYPOINT ["/opt/jaxtrade/scripts/cloud/docker-entrypoint.sh"]
CMD ["--help"]
