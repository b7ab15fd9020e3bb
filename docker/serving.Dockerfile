# The torch serving image: `modelserve serve` from the modelserve distribution (serving/) with
# torch, transformers, ...; plus the client part of modelrollout, whose model-URI grammar it reads.
# Build from the repository root: docker build -f docker/serving.Dockerfile -t modelrollout/serving .
# The model is not in the image: it comes from a mounted volume (pvc://) or a hub (hf://).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY serving/ serving/
RUN python -m pip wheel --no-deps --wheel-dir /wheels . ./serving \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install /wheels/modelrollout-*.whl /wheels/modelserve-*.whl

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/tmp/huggingface
RUN groupadd --system --gid 10001 app && useradd --system --uid 10001 --gid app --no-create-home app
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8000
# SIGTERM drains in-flight requests (--drain-timeout) before exiting 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["modelserve", "serve"]
CMD ["--model", "/models/model", "--host", "0.0.0.0", "--port", "8000"]
