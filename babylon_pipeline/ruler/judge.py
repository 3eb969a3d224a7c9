"""What every judge offers: a model name (part of the cache key) and one judgment per group."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence

from babylon_pipeline.ruler.rubrics import GENERAL, Rubric, resolve_rubric
from babylon_pipeline.ruler.types import GroupJudgment, JudgeGroup

OnJudged = Callable[[int, GroupJudgment], Awaitable[None]]
"""Called with (index in `groups`, judgment) as each group's judgment becomes final."""


async def _ignore(index: int, judgment: GroupJudgment) -> None:
    pass


class Judge(ABC):
    """Judges groups relative to themselves. Never raises for a group's failure: that group comes
    back `judge_failed` and the others are unaffected. Results are in the order of `groups`."""

    @property
    @abstractmethod
    def model(self) -> str:
        """The judge's model name, as recorded in judgments and cache keys."""

    @abstractmethod
    async def _judge(self, groups: list[JudgeGroup], rubric: Rubric, on_judged: OnJudged) -> list[GroupJudgment]:
        """One judgment per group; `on_judged` once per group, as soon as its judgment is final."""

    async def ajudge_groups(
        self, groups: Sequence[JudgeGroup], rubric: Rubric | str = GENERAL, on_judged: OnJudged = _ignore
    ) -> list[GroupJudgment]:
        """`on_judged` lets a caller keep each judgment before the rest are done (the cache does)."""
        return await self._judge(list(groups), resolve_rubric(rubric), on_judged)

    def judge_groups(self, groups: Sequence[JudgeGroup], rubric: Rubric | str = GENERAL) -> list[GroupJudgment]:
        """The synchronous entry point (runs its own event loop; call `ajudge_groups` from async code)."""
        return asyncio.run(self.ajudge_groups(groups, rubric))
