# The operator image: the modelrollout distribution with its `operator` and `dashboard` extras
# (the chart runs the dashboard from this image too), from operator/
# only (no torch, no modelserve, no dev tooling).
# Build from the repository root: `make images` (scripts/build-images.sh), or
#   docker build -f docker/operator.Dockerfile -t modelrollout/operator .
# BASE: a Debian-based image with python3 (3.11+) and its venv module; scripts/build-images.sh
# passes a locally made one where no registry serves the public image.
# Secrets (optional): pip_conf, a pip configuration file that pip reads while building, and
# pip_cert, the CA bundle it may name; neither ends up in a layer.
ARG BASE=python:3.11-slim

# The dependencies as a requirements file: the layer installing them is rebuilt only when
# this file's content changes, not on every edit of pyproject.toml.
FROM ${BASE} AS requirements
COPY docker/dependencies.py pyproject.toml /src/
RUN python3 /src/dependencies.py '/src/pyproject.toml[operator,dashboard]' >/requirements.txt

FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN --mount=type=secret,id=pip_conf --mount=type=secret,id=pip_cert \
    --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv /opt/build \
 && PIP_CONFIG_FILE=/run/secrets/pip_conf PIP_DISABLE_PIP_VERSION_CHECK=1 \
    /opt/build/bin/pip wheel --no-deps --wheel-dir /wheels .

FROM ${BASE}
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 app && useradd --system --uid 10001 --gid app --no-create-home app \
 && python3 -m venv /opt/venv
# Dependencies first, in a layer of their own: a code change does not reinstall them.
COPY --from=requirements /requirements.txt /tmp/requirements.txt
RUN --mount=type=secret,id=pip_conf --mount=type=secret,id=pip_cert \
    --mount=type=cache,target=/root/.cache/pip \
    PIP_CONFIG_FILE=/run/secrets/pip_conf PIP_DISABLE_PIP_VERSION_CHECK=1 \
    pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt
COPY --from=build /wheels /tmp/wheels
RUN PIP_DISABLE_PIP_VERSION_CHECK=1 pip install --no-cache-dir --no-deps /tmp/wheels/modelrollout-*.whl \
 && pip check && rm -rf /tmp/wheels
USER 10001:10001
ENTRYPOINT ["kopf", "run", "-m", "modelrollout.main", "--all-namespaces"]
