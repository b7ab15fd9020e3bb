"""Kubernetes API access and pure builders of the operator's child objects."""
