.PHONY: demo test e2e-kind crds reference

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

# Needs Docker and kind; cannot run on the development machine (see README).
e2e-kind:
	bash scripts/e2e-kind.sh

# The CRD (crds/ and the chart's copy) from the pydantic models; then `make reference`.
crds:
	.venv/bin/python -m modelrollout_dev.crds

reference:
	.venv/bin/python -m modelrollout_dev.reference
