"""Serving: deployment state, deterministic routing, the regression watch."""
