# The torch serving image: `modelserve serve` from the modelserve distribution (serving/) with
# torch, transformers, ...; plus the client part of modelrollout, whose model-URI grammar it reads.
# Build from the repository root: `make images` (scripts/build-images.sh), or
#   docker build -f docker/serving.Dockerfile -t modelrollout/modelserve .
# The model is not in the image: it comes from a mounted volume (pvc://) or a hub (hf://).
# torch is serving/pyproject.toml's pin, from the index pip is configured with (PyPI's build
# carries CUDA, which the GPU nodes this image serves on need).
# BASE and the pip_conf/pip_cert secrets: as in operator.Dockerfile.
ARG BASE=python:3.11-slim

# The dependencies as a requirements file: the layer installing them (torch: gigabytes) is
# rebuilt only when this file's content changes, not on every edit of a pyproject.toml.
FROM ${BASE} AS requirements
COPY docker/dependencies.py /src/
COPY pyproject.toml /src/modelrollout/
COPY serving/pyproject.toml /src/modelserve/
RUN python3 /src/dependencies.py /src/modelrollout/pyproject.toml /src/modelserve/pyproject.toml \
      >/requirements.txt

FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY serving/ serving/
RUN --mount=type=secret,id=pip_conf --mount=type=secret,id=pip_cert \
    --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv /opt/build \
 && PIP_CONFIG_FILE=/run/secrets/pip_conf PIP_DISABLE_PIP_VERSION_CHECK=1 \
    /opt/build/bin/pip wheel --no-deps --wheel-dir /wheels . ./serving

FROM ${BASE}
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/tmp/huggingface
RUN groupadd --system --gid 10001 app && useradd --system --uid 10001 --gid app --no-create-home app \
 && python3 -m venv /opt/venv
# Dependencies first, in a layer of their own: a code change does not reinstall torch.
COPY --from=requirements /requirements.txt /tmp/requirements.txt
RUN --mount=type=secret,id=pip_conf --mount=type=secret,id=pip_cert \
    --mount=type=cache,target=/root/.cache/pip \
    PIP_CONFIG_FILE=/run/secrets/pip_conf PIP_DISABLE_PIP_VERSION_CHECK=1 \
    pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt
COPY --from=build /wheels /tmp/wheels
RUN PIP_DISABLE_PIP_VERSION_CHECK=1 pip install --no-cache-dir --no-deps \
      /tmp/wheels/modelrollout-*.whl /tmp/wheels/modelserve-*.whl \
 && pip check && rm -rf /tmp/wheels
USER 10001:10001
EXPOSE 8000
# SIGTERM drains in-flight requests (--drain-timeout) before exiting 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["modelserve", "serve"]
CMD ["--model", "/models/model", "--host", "0.0.0.0", "--port", "8000"]
