"""Strategies: pure functions from (spec, status, observations) to a Decision."""

from modelrollout.engine.strategies import canary

__all__ = ["canary"]
