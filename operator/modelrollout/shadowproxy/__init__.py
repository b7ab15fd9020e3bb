"""The shadow comparison proxy: run by the operator, from its own image, during a shadow with
strategy.shadow.comparison (engine/comparison.py owns its Deployment and Service).

`python -m modelrollout.shadowproxy --stable URL --candidate URL --candidate-revision REV
--sample-percent N --window S`: server.py serves, compare.py measures, metrics.py names the series
the comparison builtins (analysis/builtins.py) read. Depends on the operator extra only (aiohttp,
prometheus-client): no torch.
"""
