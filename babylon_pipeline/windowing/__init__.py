"""The window stages as plain functions (no Dagster): each reads its inputs from the trajectory
store and the object store, writes its files, and returns what the asset reports."""
