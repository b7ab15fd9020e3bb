"""`kubectl modelrollout dashboard`: a local web dashboard of ModelRollouts.

One watch per resource kind (ModelRollouts, their Events) feeds an in-memory
view shared by every open page (hub.py); pages get changes by server-sent
events. Views are pure functions of what was watched (views.py); each
check's values over time come from the rollout's own Prometheus, cached per
check and step (series.py). Commands go through the plugin's own code
(cli.send_command, cli.undo), with the user's kubeconfig and so their RBAC.
Needs the `dashboard` extra (FastAPI, uvicorn); no kopf.
"""
