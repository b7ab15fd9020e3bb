.PHONY: demo test images images-vllm e2e-kind crds reference

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

# operator, modelserve and modelserve:e2e, with docker or else podman (docs/development.md, "Images").
images:
	bash scripts/build-images.sh

# The above, then vLLM's CPU build as images of its own (vllm-cpu:dev, vllm-cpu:e2e).
images-vllm:
	bash scripts/build-images.sh vllm

# Needs Docker and kind; cannot run on the development machine (see README).
e2e-kind:
	bash scripts/e2e-kind.sh

# The CRD (crds/ and the chart's copy) from the pydantic models; then `make reference`.
crds:
	.venv/bin/python -m modelrollout_dev.crds

reference:
	.venv/bin/python -m modelrollout_dev.reference
