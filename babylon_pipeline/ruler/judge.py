"""What every judge offers: a model name (part of the cache key) and one judgment per group."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence

from babylon_pipeline.ruler.rubrics import GENERAL, Rubric, resolve_rubric
from babylon_pipeline.ruler.types import GroupJudgment, JudgeGroup


class Judge(ABC):
    """Judges groups relative to themselves. Never raises for a group's failure: that group comes
    back `judge_failed` and the others are unaffected. Results are in the order of `groups`."""

    @property
    @abstractmethod
    def model(self) -> str:
        """The judge's model name, as recorded in judgments and cache keys."""

    @abstractmethod
    async def _judge(self, groups: list[JudgeGroup], rubric: Rubric) -> list[GroupJudgment]: ...

    async def ajudge_groups(self, groups: Sequence[JudgeGroup], rubric: Rubric | str = GENERAL) -> list[GroupJudgment]:
        return await self._judge(list(groups), resolve_rubric(rubric))

    def judge_groups(self, groups: Sequence[JudgeGroup], rubric: Rubric | str = GENERAL) -> list[GroupJudgment]:
        """The synchronous entry point (runs its own event loop; call `ajudge_groups` from async code)."""
        return asyncio.run(self.ajudge_groups(groups, rubric))
