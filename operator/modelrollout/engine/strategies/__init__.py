"""Strategies: pure functions from (spec, status, observations) to a Decision."""
