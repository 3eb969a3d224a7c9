"""Babylon-lite: a small, seeded market world whose agents act through policies and are recorded
through the recorder SDK, producing data shaped like the real game's."""

from babylon_pipeline.sim.world import AgentsAreNotUsers, AlreadySimulated, SimulationSummary, simulate

__all__ = ["AgentsAreNotUsers", "AlreadySimulated", "SimulationSummary", "simulate"]
