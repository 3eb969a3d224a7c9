"""Serving: deployment state, deterministic routing, and loading adapters where agents are answered."""
