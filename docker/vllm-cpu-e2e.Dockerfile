# vLLM's CPU image with the tiny models its e2e tests serve, in /models/vllm-v1 and vllm-v2
# (heads 64 wide, which vLLM's CPU attention needs), made by modelserve in the e2e image.
ARG BASE=modelrollout/vllm-cpu:dev
ARG MODELS=modelrollout/modelserve:e2e
FROM ${MODELS} AS models
FROM ${BASE}
COPY --from=models /models/vllm-v1 /models/vllm-v1
COPY --from=models /models/vllm-v2 /models/vllm-v2
