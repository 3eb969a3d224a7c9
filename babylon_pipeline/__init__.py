"""Babylon's agent training loop: record, window, export, reward, train, deploy."""
