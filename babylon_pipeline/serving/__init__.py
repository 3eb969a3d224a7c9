"""Serving trained versions: the deployment state, deterministic routing, adapter loading."""
