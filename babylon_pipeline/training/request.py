"""What a training run is asked to do: the Pipes extras, checked before any model is loaded.

Pure and torch-free, so the orchestrator builds and validates a request (and its extras) with the
same code the trainer reads them with. Every field is checked and unknown keys are errors: a typo
in a hyperparameter must fail the run, not silently train with the default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from babylon_pipeline.storage.keys import BASE_MODEL, InvalidKey, check_key, check_name, model_prefix

STORE_BASE = "store:base"  # the base model saved under models/base/ (embedded profile)
LOSS_TYPES = ("dapo", "grpo", "dr_grpo")
WANDB_MODES = ("online", "offline", "disabled")


class InvalidTrainingRequest(ValueError):
    """The extras cannot describe a training run; the message says which field and why."""


@dataclass(frozen=True)
class GRPOSettings:
    """Hyperparameters. Defaults follow TRL's GRPOConfig where it has one (epsilon, beta, loss, clipping);
    the learning rate is LoRA-sized (TRL's 1e-6 is for full fine-tuning): 5e-5 suits both the tiny
    base and 7B-class bases with r=8 adapters."""

    learning_rate: float = 5e-5
    epochs: int = 1  # passes over the batch's samples
    max_steps: int | None = None  # optimizer steps at most (None: as many as the epochs take)
    micro_batch_size: int = 8  # sequences per optimizer step
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: str | tuple[str, ...] = "all-linear"
    epsilon: float = 0.2  # PPO clip range: ratio kept within [1 - epsilon, 1 + epsilon]
    beta: float = 0.0  # weight of the k3 KL to the base model (adapter disabled); 0 skips the reference pass
    kl_bias_correction: bool = True  # KL term weighted by the ratio (TRL's use_bias_correction_kl)
    loss_type: str = "dapo"
    max_grad_norm: float = 1.0
    max_seq_len: int = 1024  # prompt + completion tokens; longer prompts lose their start
    max_prompt_tokens: int | None = None  # the sampling policy's prompt room: prompts keep their last this many
    max_completion_len: int = 256  # dr_grpo's constant normaliser (TRL: max_completion_length)
    checkpoint_every: int = 0  # optimizer steps between intermediate checkpoints; 0: none
    seed: int = 0
    use_behaviour_logprobs: bool = True  # importance ratio against recorded logprobs where they are valid
    trust_logprobs_without_temperature: bool = False  # valid even when the sampling temperature was not recorded

    def __post_init__(self) -> None:
        for item in fields(self):
            _check_type(item.name, getattr(self, item.name), item.default)
        _require(self.learning_rate > 0, "learning_rate must be > 0")
        _require(self.epochs >= 1, "epochs must be >= 1")
        _require(self.max_steps is None or self.max_steps >= 1, "max_steps must be >= 1 or null")
        _require(self.micro_batch_size >= 1, "micro_batch_size must be >= 1")
        _require(self.lora_r >= 1 and self.lora_alpha >= 1, "lora_r and lora_alpha must be >= 1")
        _require(0.0 <= self.lora_dropout < 1.0, "lora_dropout must be in [0, 1)")
        _require(0.0 < self.epsilon < 1.0, "epsilon must be in (0, 1)")
        _require(self.beta >= 0.0, "beta must be >= 0")
        _require(self.loss_type in LOSS_TYPES, f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        _require(self.max_grad_norm > 0, "max_grad_norm must be > 0")
        _require(self.max_seq_len >= 2, "max_seq_len must be >= 2")
        _require(self.max_prompt_tokens is None or self.max_prompt_tokens >= 1,
                 "max_prompt_tokens must be >= 1 or null")
        _require(self.max_completion_len >= 1, "max_completion_len must be >= 1")
        _require(self.checkpoint_every >= 0, "checkpoint_every must be >= 0")
        modules = (self.target_modules,) if isinstance(self.target_modules, str) else self.target_modules
        _require(bool(modules) and all(isinstance(m, str) and m for m in modules),
                 "target_modules must be a non-empty string or list of strings")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> GRPOSettings:
        if not isinstance(values, Mapping):
            raise InvalidTrainingRequest(f"settings must be an object, got {type(values).__name__}")
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(values) - known)
        _require(not unknown, f"unknown settings {unknown}; known: {sorted(known)}")
        given = dict(values)
        if isinstance(given.get("target_modules"), list):
            given["target_modules"] = tuple(given["target_modules"])
        for item in fields(cls):  # JSON has one number type: an int where a float is expected is fine
            if isinstance(item.default, float) and _is_int(given.get(item.name)):
                given[item.name] = float(given[item.name])
        return cls(**given)

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        if isinstance(self.target_modules, tuple):
            values["target_modules"] = list(self.target_modules)
        return values


@dataclass(frozen=True)
class WandbOptions:
    """`mode` None: online when WANDB_API_KEY is set, else offline (WANDB_MODE in the environment wins)."""

    project: str = "babylon-pipeline"
    mode: str | None = None

    def __post_init__(self) -> None:
        _require(isinstance(self.project, str) and self.project.strip() != "", "wandb.project must be a name")
        _require(self.mode is None or self.mode in WANDB_MODES, f"wandb.mode must be one of {WANDB_MODES} or null")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> WandbOptions:
        if values is None:
            return cls()
        _require(isinstance(values, Mapping), "wandb must be an object {project, mode?}")
        unknown = sorted(set(values) - {"project", "mode"})
        _require(not unknown, f"unknown wandb keys {unknown}; known: ['mode', 'project']")
        return cls(**values)


@dataclass(frozen=True)
class TrainingRequest:
    batch_id: str
    version: str  # the version this run writes, vX.Y.Z
    storage_url: str  # file:///... or s3://bucket[/prefix]
    batch_key: str  # JSON lines of ART TrajectoryGroups, rewards already the training rewards
    base_model: str  # "store:base", a hub id or a local path
    parent_version: str | None = None  # the adapter to continue from; None: a fresh LoRA
    settings: GRPOSettings = field(default_factory=GRPOSettings)
    wandb: WandbOptions = field(default_factory=WandbOptions)

    def __post_init__(self) -> None:
        _check_name("batch_id", self.batch_id)
        _check_version("version", self.version)
        if self.parent_version is not None:
            _check_version("parent_version", self.parent_version)
            _require(self.parent_version != self.version, "parent_version must differ from version")
        scheme = urlsplit(self.storage_url).scheme if isinstance(self.storage_url, str) else None
        _require(scheme in ("file", "s3"), "storage_url must be file:///absolute/path or s3://bucket[/prefix]")
        try:
            check_key(self.batch_key)
        except InvalidKey as error:
            raise InvalidTrainingRequest(f"batch_key: {error}") from None
        _require(isinstance(self.base_model, str) and self.base_model.strip() != "",
                 f"base_model must be {STORE_BASE!r}, a hub id or a local path")
        _require(isinstance(self.settings, GRPOSettings), "settings must be GRPOSettings")
        _require(isinstance(self.wandb, WandbOptions), "wandb must be WandbOptions")

    @classmethod
    def from_extras(cls, extras: Mapping[str, Any]) -> TrainingRequest:
        if not isinstance(extras, Mapping):
            raise InvalidTrainingRequest(f"extras must be an object, got {type(extras).__name__}")
        required = ("batch_id", "version", "storage_url", "batch_key", "base_model")
        missing = [name for name in required if extras.get(name) is None]
        _require(not missing, f"missing required extras {missing}")
        unknown = sorted(set(extras) - {*required, "parent_version", "settings", "wandb"})
        _require(not unknown, f"unknown extras {unknown}")
        return cls(
            **{name: extras[name] for name in required},
            parent_version=extras.get("parent_version"),
            settings=GRPOSettings.from_dict({} if extras.get("settings") is None else extras["settings"]),
            wandb=WandbOptions.from_dict(extras.get("wandb")),
        )

    def to_extras(self) -> dict[str, Any]:
        """JSON for `PipesClient.run(extras=...)`; `from_extras` reads it back to an equal request."""
        return {
            "batch_id": self.batch_id,
            "version": self.version,
            "storage_url": self.storage_url,
            "batch_key": self.batch_key,
            "base_model": self.base_model,
            "parent_version": self.parent_version,
            "settings": self.settings.as_dict(),
            "wandb": asdict(self.wandb),
        }


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidTrainingRequest(message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_type(name: str, value: object, default: object) -> None:
    """The type a setting's default has (None-able when its default is None; a float must be finite)."""
    if name == "target_modules" or (default is None and value is None):
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, float) and math.isfinite(value)
    elif isinstance(default, int) or default is None:
        ok = _is_int(value)
    else:
        ok = isinstance(value, type(default))
    _require(ok, f"setting {name} must be {'a finite ' if isinstance(default, float) else ''}"
                 f"{'int' if default is None else type(default).__name__}, got {value!r}")


def _check_name(what: str, value: object) -> None:
    try:
        check_name(value)
    except InvalidKey:
        raise InvalidTrainingRequest(
            f"{what} must be name-safe (1-128 of letters, digits, '.', '_', '-'), got {value!r}"
        ) from None


def _check_version(what: str, value: object) -> None:
    try:
        _require(value != BASE_MODEL, f"{what} must be a trained version vX.Y.Z, not {BASE_MODEL!r}")
        model_prefix(value)  # type: ignore[arg-type]
    except InvalidKey:
        raise InvalidTrainingRequest(f"{what} must look like vX.Y.Z (e.g. v1.4.0), got {value!r}") from None
