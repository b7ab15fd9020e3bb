"""Analysis: PromQL templates, built-in checks, metric providers, pure assessment.

Prometheus label names (the scrape config's decision, used by every built-in
check and the examples): a PodMonitor relabels the pod labels
`modelrollout.dev/rollout`, `modelrollout.dev/revision` and
`modelrollout.dev/role` to the series labels `rollout`, `revision` and `role`,
next to the usual `namespace` and `pod`. See `builtins.py`.
"""
