.PHONY: demo test e2e-kind sync-chart-crds reference

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

# Needs Docker and kind; cannot run on the development machine (see README).
e2e-kind:
	bash scripts/e2e-kind.sh

sync-chart-crds:
	bash scripts/sync-chart-crds.sh

reference:
	.venv/bin/python -m modelrollout_dev.reference
