"""Sensors: training readiness, regression watch, run failure alerts."""
