"""The local development cluster: real control plane from Go modules, kwok nodes, Prometheus."""
