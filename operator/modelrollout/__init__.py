"""modelrollout: progressive delivery of served ML models on Kubernetes."""

__version__ = "0.1.0"
