# The serving image with tiny random-weights models baked in, for the kind e2e
# (scripts/e2e-kind.sh): the test modules' rollouts use file:///models/v1..v3
# and chat, which exist here, so their pods really start on kind; /models/vllm-v1..v2 are
# the same in the shape vLLM's CPU build serves (modelserve.tiny_model.VLLM_SHAPE), which
# docker/vllm-cpu-e2e.Dockerfile copies.
ARG BASE=modelrollout/modelserve:dev
FROM ${BASE}
USER 0:0
RUN for seed in 0 1 2; do modelserve make-tiny-model /models/v$((seed + 1)) --seed $seed; done \
 && for seed in 0 1; do \
      modelserve make-tiny-model /models/vllm-v$((seed + 1)) --seed $seed --hidden-size 256; \
    done \
 && ln -s /models/v1 /models/chat \
 && chown -R 10001:10001 /models
USER 10001:10001
