"""The embedded profile's inference: no server, the pipeline's own local model in this process.

Loading a version downloads its adapter from the object store and puts it on the base recorded in
`models/base/metadata.json` (`LocalModelPolicy.from_store`), so a version whose files are missing
or do not fit the base fails here, before anything is routed to it. The health check samples the
health-check tick a few times in one batch and passes when an answer parses as a game action: a
sampled local model is judged on whether it can act, the evaluation judges how well. torch is
imported only when a model is loaded.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from babylon_pipeline.model.base_record import BaseModelMissing, BaseRecord, read_base_record
from babylon_pipeline.model.prompt_room import ANSWER_TOKENS
from babylon_pipeline.serving.health import HealthCheck, health_prompts, read_action
from babylon_pipeline.serving.inference import InferenceError
from babylon_pipeline.sim.policy import Policy, PolicyRequest
from babylon_pipeline.storage import ObjectStore
from babylon_pipeline.store.registry import model_id_of, parse_version

if TYPE_CHECKING:
    from babylon_pipeline.model.policy import LocalModelPolicy


class EmbeddedInference:
    def __init__(self, store: ObjectStore, *, work_dir: Path | None = None, temperature: float = 0.7,
                 max_new_tokens: int = ANSWER_TOKENS, health_samples: int = 4, seed: int = 0) -> None:
        if health_samples < 1:
            raise ValueError("health_samples must be at least 1")
        self.store, self.temperature, self.max_new_tokens = store, temperature, max_new_tokens
        self.health_samples, self.seed = health_samples, seed
        self._work_dir = work_dir  # made on the first load
        self._loaded: dict[str | None, LocalModelPolicy] = {}

    def describe(self) -> str:
        return "embedded local model"

    def __repr__(self) -> str:
        return f"EmbeddedInference(loaded={sorted(v or 'base' for v in self._loaded)})"

    def loaded(self) -> frozenset[str]:
        return frozenset(v for v in self._loaded if v is not None)

    def load(self, version: str) -> bool:
        if parse_version(version) is None:
            raise InferenceError(f"not a model version (want vX.Y.Z): {version!r}")
        if version in self._loaded:
            return False
        self._loaded[version] = self._local(version)
        return True

    def unload(self, version: str) -> bool:
        return self._loaded.pop(version, None) is not None

    def health_check(self, version: str) -> HealthCheck:
        policy = self._loaded.get(version)
        name = model_id_of(version)
        if policy is None:
            raise InferenceError(f"{name} is not loaded in the {self.describe()}: load it before its health check")
        system, user, observation = health_prompts()
        answers = policy.act_batch([PolicyRequest(system, user, observation)] * self.health_samples)
        read = [(answer, read_action(answer.text)) for answer in answers]
        good = [(answer, action) for answer, action in read if not isinstance(action, str)]
        if not good:
            raise InferenceError(f"{name} failed its health check in the {self.describe()}: none of "
                                 f"{len(answers)} answers holds a game action (first: {read[0][1]})")
        answer, action = good[0]
        return HealthCheck(version, name, action.action_type, answer.latency_ms or 0.0, answer.completion_tokens,
                           answers=len(answers), actions=len(good))

    def policy(self, version: str | None) -> Policy:
        if version not in self._loaded:
            if version is not None:
                self.load(version)
            else:
                self._loaded[None] = self._local(None)
        return self._loaded[version]

    def _local(self, version: str | None) -> LocalModelPolicy:
        from babylon_pipeline.model.policy import LocalModelPolicy

        base = self._base()
        if self._work_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix="babylon-inference-"))
        try:
            return LocalModelPolicy.from_store(
                self.store, base_name=base.name, version=version, base=base.spec,
                work_dir=self._work_dir / (version or "base"), temperature=self.temperature,
                max_new_tokens=min(self.max_new_tokens, base.context_tokens // 2), context_tokens=base.context_tokens,
                seed=self.seed,
            )
        except (OSError, ValueError, RuntimeError) as error:
            what = model_id_of(version) if version else f"the base {base.name}"
            raise InferenceError(f"could not load {what} in the {self.describe()}: {error}") from None

    def _base(self) -> BaseRecord:
        try:
            return read_base_record(self.store)
        except BaseModelMissing as error:
            raise InferenceError(f"the {self.describe()} has no base to load adapters on: {error}") from None
