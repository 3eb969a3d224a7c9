"""Dagster resources: thin wrappers that pick production or embedded settings from the environment."""

from babylon_pipeline.resources.trajectory_store import TrajectoryStore, trajectory_store_from_env

__all__ = ["TrajectoryStore", "trajectory_store_from_env"]
