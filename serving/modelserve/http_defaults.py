"""How modelserve's HTTP server behaves towards the gateway in front of it.

Here rather than in the settings module so that the CLI's parser and clients
(tests, benchmarks) read them without importing the settings' dependencies.
"""

# Which pod answered, through any gateway: what a client (or a test) attributes an
# answer by when the gateway in between says nothing of where it sent the request.
SERVED_BY_HEADER = "x-modelserve-pod"

# An idle client connection stays open this long. Longer than a gateway keeps idle
# upstream connections (Traefik 90 s, NGINX 60 s): shorter, and the server may close one
# just as the gateway sends a request on it, which then fails (seen through Traefik with
# uvicorn's default of 5 s: one request in 1276).
KEEP_ALIVE_TIMEOUT_S = 120.0
