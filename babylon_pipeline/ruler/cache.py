"""Judgments remembered in the object store, so re-materialising a window calls no judge.

The key is a sha256 over the judge model, the rubric (name and text) and the canonical JSON of
the group's trajectories (ids, messages, metrics; not the group id, so equal content is judged
once). Only `scored` judgments are stored: a failure is retried the next time. Each is stored as
soon as its group is judged, so a later failure, deadline or crash never loses a paid-for call.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Protocol

from pydantic import ValidationError

from babylon_pipeline.ruler.judge import Judge, OnJudged
from babylon_pipeline.ruler.rubrics import Rubric
from babylon_pipeline.ruler.types import GroupJudgment, JudgeGroup


class ByteStore(Protocol):
    """The two object-store operations the cache needs; `get_bytes` returns None for a missing key."""

    def get_bytes(self, key: str) -> bytes | None: ...

    def put_bytes(self, key: str, data: bytes) -> None: ...


def content_hash(judge_model: str, rubric: Rubric, group: JudgeGroup) -> str:
    payload = {
        "judge_model": judge_model,
        "rubric": {"name": rubric.name, "text": rubric.text},
        "trajectories": [t.model_dump() for t in group.trajectories],
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class JudgmentCache:
    def __init__(self, store: ByteStore, prefix: str = "judge-cache") -> None:
        self.store = store
        self.prefix = prefix

    def key(self, judge_model: str, rubric: Rubric, group: JudgeGroup) -> str:
        return f"{self.prefix}/{content_hash(judge_model, rubric, group)}.json"

    def get(self, key: str) -> GroupJudgment | None:
        """The stored judgment, or None when absent or unreadable (then it is judged again and overwritten)."""
        data = self.store.get_bytes(key)
        if data is None:
            return None
        try:
            judgment = GroupJudgment.model_validate_json(data)
        except ValidationError:
            return None
        return judgment if judgment.status == "scored" else None

    def put(self, key: str, judgment: GroupJudgment) -> None:
        if judgment.status != "scored":
            raise ValueError("only scored judgments are cached")
        self.store.put_bytes(key, judgment.model_dump_json().encode())


def _as_cached(judgment: GroupJudgment, group: JudgeGroup) -> GroupJudgment:
    """A stored judgment reported for this group and this run: nothing was spent on it now."""
    return judgment.model_copy(update={
        "group_id": group.group_id,
        "cached": True,
        "calls": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_usd": None if judgment.cost_usd is None else 0.0,
    })


class CachedJudge(Judge):
    """Any judge behind the cache: hits make no calls, the misses go to the inner judge in one batch.
    `reuse=False` judges every group again (a re-score asked for by a person) and replaces what is stored."""

    def __init__(self, judge: Judge, cache: JudgmentCache, *, reuse: bool = True) -> None:
        self.judge = judge
        self.cache = cache
        self.reuse = reuse

    @property
    def model(self) -> str:
        return self.judge.model

    async def _judge(self, groups: list[JudgeGroup], rubric: Rubric, on_judged: OnJudged) -> list[GroupJudgment]:
        keys = [self.cache.key(self.model, rubric, g) for g in groups]
        found = await asyncio.gather(*(asyncio.to_thread(self.cache.get, k) for k in keys)) if self.reuse \
            else [None] * len(keys)
        results = [None if hit is None else _as_cached(hit, g) for hit, g in zip(found, groups, strict=True)]
        for i, result in enumerate(results):
            if result is not None:
                await on_judged(i, result)
        misses = [i for i, hit in enumerate(results) if hit is None]

        async def remember(j: int, judgment: GroupJudgment) -> None:
            if judgment.status == "scored":
                await asyncio.to_thread(self.cache.put, keys[misses[j]], judgment)
            await on_judged(misses[j], judgment)

        fresh = await self.judge.ajudge_groups([groups[i] for i in misses], rubric, remember)
        for i, judgment in zip(misses, fresh, strict=True):
            results[i] = judgment
        return [r for r in results if r is not None]
