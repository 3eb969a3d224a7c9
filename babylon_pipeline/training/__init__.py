"""The GRPO trainer: one LoRA adapter version from one training batch, in its own process.

It reads everything from the object store and writes everything back there; the orchestrator
starts it through Dagster Pipes (`python -m babylon_pipeline.training`) and registers the model
once it succeeds. This package's `__init__` imports nothing, so the orchestrator can import
`training.request` (pure, torch-free) without pulling in torch.
"""
