"""Notifications on rollout events: sinks (one module each), templates, and the sender."""
