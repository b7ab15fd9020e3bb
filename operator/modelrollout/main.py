"""Entry point for `kopf run -m modelrollout.main`: importing it registers every handler."""

from modelrollout.handlers import rollout as rollout

__all__ = ["rollout"]
