# The operator image: the modelrollout distribution with its `operator` extra, from operator/
# only (no torch, no modelserve, no dev tooling).
# Build from the repository root: docker build -f docker/operator.Dockerfile -t modelrollout/operator .

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
# A wheel, then a virtual environment holding it and its runtime dependencies only.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install "$(ls /wheels/modelrollout-*.whl)[operator]"

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 app && useradd --system --uid 10001 --gid app --no-create-home app
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
ENTRYPOINT ["kopf", "run", "-m", "modelrollout.main", "--all-namespaces"]
