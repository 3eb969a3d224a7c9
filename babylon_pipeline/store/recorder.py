"""The recorder SDK: Python agents record their ticks exactly as Babylon's TypeScript recorder does.

What the app's recorder got wrong is fixed here: the window is fixed when the trajectory starts
(not recomputed at the end, so a tick spanning the hour stays in its window), caller metadata is
kept, `updatedAt` is always set, and the trajectory row and its `llm_call_logs` rows land in one
transaction. Each step is written in the superset of both app shapes (recorder keys plus the
logger plugin's `stepId`, `callId`, `messages`, timestamps), so either reader of the app parses it.

State is per-trajectory and guarded by a lock: many threads may record different trajectories at
once. The methods do no I/O except `end_trajectory`; async agents call `aend_trajectory`.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from babylon_pipeline.store import tables
from babylon_pipeline.store.db import without_tables
from babylon_pipeline.store.records import Action, EnvironmentState, LLMCall, TokenLogprob
from babylon_pipeline.store.users import FOREIGN_KEY, AgentUser, create_agent_users, missing_agents, named
from babylon_pipeline.windows import to_utc_naive, window_of, window_start

TRADE_ACTIONS = frozenset({"BUY_SHARES", "SELL_SHARES", "OPEN_PERP", "CLOSE_PERP", "TRADING_DECISION"})
POST_ACTIONS = frozenset({"CREATE_POST"})


class RecorderError(Exception):
    """Base of the recorder SDK's own errors: the caller's mistake or the store's refusal, said plainly."""


class UnknownTrajectory(RecorderError, KeyError):
    """The trajectory id was never started by this recorder, or has already ended."""

    def __str__(self) -> str:
        return f"unknown or already ended trajectory: {self.args[0]!r}"


class StepOrderError(RecorderError, RuntimeError):
    """A step method was called out of order (e.g. logging an LLM call with no open step)."""


class UnknownAgentError(RecorderError, LookupError):
    """The app's database has no `User` row for these agents, and its foreign key refuses their trajectories.

    Nothing was written and the trajectories are still open: create the users, then end them again."""

    def __init__(self, agent_ids: Sequence[str], constraint: str | None = None) -> None:
        super().__init__(tuple(agent_ids), constraint)
        self.agent_ids = tuple(agent_ids)
        self.constraint = constraint

    def __str__(self) -> str:
        which = f"agent {self.agent_ids[0]} is not a User row" if len(self.agent_ids) == 1 else \
            f"agents {named(self.agent_ids)} are not User rows"
        constraint = f" (constraint {self.constraint})" if self.constraint else ""
        return (f"{which}: in this database {FOREIGN_KEY}{constraint}; nothing was written and the trajectory "
                "is still open: create the user (isAgent true), then end it again")


@dataclass
class _OpenTrajectory:
    row_id: str
    trajectory_id: str
    agent_id: str
    scenario_id: str | None
    window_id: str
    metadata: dict[str, Any]
    start_time: datetime
    steps: list[dict[str, Any]] = field(default_factory=list)
    open_step: dict[str, Any] | None = None
    call_rows: list[dict[str, Any]] = field(default_factory=list)


def _epoch_ms(moment: datetime) -> int:
    return int(moment.replace(tzinfo=UTC).timestamp() * 1000)


class TrajectoryRecorder:
    def __init__(
        self,
        engine: sa.Engine,
        clock: Callable[[], datetime] | None = None,
        ids: Callable[[], str] | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock or (lambda: datetime.now(UTC))
        self._ids = ids or (lambda: uuid.uuid4().hex)
        self._open: dict[str, _OpenTrajectory] = {}
        self._lock = threading.Lock()

    def _now(self) -> datetime:
        return to_utc_naive(self._clock())

    def _get(self, trajectory_id: str) -> _OpenTrajectory:
        try:
            return self._open[trajectory_id]
        except KeyError:
            raise UnknownTrajectory(trajectory_id) from None

    def start_trajectory(
        self,
        agent_id: str,
        scenario_id: str | None = None,
        window_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        if not agent_id:
            raise ValueError("agent_id is required")
        now = self._now()
        if window_id is not None:
            window_start(window_id)  # rejects a malformed id now, not at write time
        with self._lock:
            trajectory = _OpenTrajectory(
                row_id=self._ids(),
                trajectory_id=self._ids(),
                agent_id=agent_id,
                scenario_id=scenario_id,
                window_id=window_id or window_of(now),
                metadata=dict(metadata or {}),
                start_time=now,
            )
            self._open[trajectory.trajectory_id] = trajectory
        return trajectory.trajectory_id

    def start_step(self, trajectory_id: str, env_state: EnvironmentState | Mapping[str, Any]) -> str:
        state = EnvironmentState.model_validate(env_state).to_json_dict()
        now = self._now()
        with self._lock:
            trajectory = self._get(trajectory_id)
            if trajectory.open_step is not None:
                raise StepOrderError(f"step {trajectory.open_step['stepNumber']} of {trajectory_id} is still open")
            state.setdefault("timestamp", _epoch_ms(now))
            trajectory.open_step = {
                "stepId": self._ids(),
                "stepNumber": len(trajectory.steps),
                "timestamp": _epoch_ms(now),
                "environmentState": state,
                "providerAccesses": [],
                "llmCalls": [],
            }
            return trajectory.open_step["stepId"]

    def _step(self, trajectory_id: str, what: str) -> dict[str, Any]:
        trajectory = self._get(trajectory_id)
        if trajectory.open_step is None:
            raise StepOrderError(f"{what} needs an open step: call start_step({trajectory_id!r}, ...) first")
        return trajectory.open_step

    def log_provider_access(self, trajectory_id: str, provider_name: str, data: Any, purpose: str) -> None:
        now = self._now()
        with self._lock:
            self._step(trajectory_id, "log_provider_access")["providerAccesses"].append(
                {"providerName": provider_name, "data": data, "purpose": purpose, "timestamp": _epoch_ms(now)}
            )

    def log_llm_call(
        self,
        trajectory_id: str,
        *,
        model: str,
        system_prompt: str,
        user_prompt: str,
        response: str,
        temperature: float,
        max_tokens: int,
        messages: list[dict[str, Any]] | None = None,
        purpose: str = "action",
        action_type: str | None = None,
        reasoning: str | None = None,
        top_p: float | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        latency_ms: float | None = None,
        logprobs: list[TokenLogprob] | list[Mapping[str, Any]] | None = None,
        model_version: str | None = None,
    ) -> str:
        now = self._now()
        call = LLMCall(
            model=model,
            model_version=model_version,
            system_prompt=system_prompt,
            user_prompt=user_prompt,
            messages=messages
            or [{"role": "system", "content": system_prompt}, {"role": "user", "content": user_prompt}],
            response=response,
            reasoning=reasoning,
            temperature=temperature,
            max_tokens=max_tokens,
            top_p=top_p,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_ms=latency_ms,
            purpose=purpose,
            action_type=action_type,
            timestamp=_epoch_ms(now),
            logprobs=logprobs,
        )
        with self._lock:
            trajectory = self._get(trajectory_id)
            step = self._step(trajectory_id, "log_llm_call")
            call.call_id = self._ids()
            step["llmCalls"].append(call.to_json_dict())
            trajectory.call_rows.append(self._call_row(trajectory, step["stepId"], call, now))
        return call.call_id

    def _call_row(self, trajectory: _OpenTrajectory, step_id: str, call: LLMCall, now: datetime) -> dict[str, Any]:
        extra = {"modelVersion": call.model_version}
        if call.logprobs is not None:
            extra["logprobs"] = [token.to_json_dict() for token in call.logprobs]
        return {
            "id": self._ids(),
            "trajectoryId": trajectory.trajectory_id,
            "stepId": step_id,
            "callId": call.call_id,
            "timestamp": now,
            "latencyMs": None if call.latency_ms is None else int(call.latency_ms),
            "model": call.model,
            "purpose": call.purpose,
            "actionType": call.action_type,
            "systemPrompt": call.system_prompt,
            "userPrompt": call.user_prompt,
            "messagesJson": json.dumps(call.messages),
            "response": call.response,
            "reasoning": call.reasoning,
            "temperature": call.temperature,
            "maxTokens": call.max_tokens,
            "topP": call.top_p,
            "promptTokens": call.prompt_tokens,
            "completionTokens": call.completion_tokens,
            "totalTokens": (call.prompt_tokens or 0) + (call.completion_tokens or 0)
            if call.prompt_tokens is not None or call.completion_tokens is not None
            else None,
            "metadata": json.dumps({k: v for k, v in extra.items() if v is not None}),
            "createdAt": now,
        }

    def complete_step(self, trajectory_id: str, action: Action | Mapping[str, Any], reward: float) -> None:
        if not math.isfinite(reward):
            raise ValueError(f"reward must be a finite number, got {reward!r}")
        recorded = Action.model_validate(action).to_json_dict()
        with self._lock:
            trajectory = self._get(trajectory_id)
            step = self._step(trajectory_id, "complete_step")
            step["action"] = recorded
            step["reward"] = float(reward)
            trajectory.steps.append(step)
            trajectory.open_step = None

    def end_trajectory(
        self,
        trajectory_id: str,
        final_status: str = "completed",
        final_balance: float | None = None,
        final_pnl: float | None = None,
        game_knowledge: Mapping[str, Any] | None = None,
        reward_components: Mapping[str, float] | None = None,
    ) -> None:
        """Write the trajectory and its LLM calls in one transaction; the id is forgotten only on success."""
        self.end_trajectories({trajectory_id: dict(final_status=final_status, final_balance=final_balance,
                                                   final_pnl=final_pnl, game_knowledge=game_knowledge,
                                                   reward_components=reward_components)})

    def end_trajectories(self, endings: Mapping[str, Mapping[str, Any]], *, users: Sequence[AgentUser] = ()) -> None:
        """End several trajectories in one transaction (a simulator's whole scenario): all or none are written.

        `endings` maps each trajectory id to `end_trajectory`'s keyword arguments. `users` become the app's
        `User` rows (if not already) in the same transaction, before the trajectories that reference them.
        If the write fails, every trajectory is left exactly as it was, open, to end again."""
        with self._lock:
            ending = [(self._get(trajectory_id), outcome) for trajectory_id, outcome in endings.items()]
            dangling = [(trajectory, trajectory.open_step) for trajectory, _ in ending if trajectory.open_step is not None]
            for trajectory, step in dangling:  # an agent that died mid-tick: keep what it did, unacted
                trajectory.steps.append({**step, "reward": 0.0})
                trajectory.open_step = None
        try:
            self._write(ending, users)
        except BaseException:
            with self._lock:
                for trajectory, step in dangling:
                    trajectory.steps.pop()
                    trajectory.open_step = step
            raise
        with self._lock:
            for trajectory_id in endings:
                self._open.pop(trajectory_id, None)

    def _write(self, ending: list[tuple[_OpenTrajectory, Mapping[str, Any]]], users: Sequence[AgentUser]) -> None:
        now = self._now()
        rows = [self._trajectory_row(trajectory, now, **outcome) for trajectory, outcome in ending]
        call_rows = [row for trajectory, _ in ending for row in trajectory.call_rows]
        try:
            with self._engine.begin() as conn:
                create_agent_users(conn, users, now)
                conn.execute(sa.insert(tables.trajectories), rows)
                if call_rows:
                    conn.execute(sa.insert(tables.llm_call_logs), call_rows)
        except sa.exc.IntegrityError as error:
            if unknown := self._unknown_agents(error, [trajectory.agent_id for trajectory, _ in ending]):
                raise unknown from None
            raise
        except sa.exc.DBAPIError:
            missing = without_tables(self._engine, tables.trajectories.name, tables.llm_call_logs.name)
            if missing is not None:
                raise missing from None
            raise

    def _unknown_agents(self, error: sa.exc.IntegrityError, agent_ids: list[str]) -> UnknownAgentError | None:
        """The typed error for a foreign-key refusal of agents that are not `User` rows, else None."""
        code = getattr(error.orig, "pgcode", None) or getattr(error.orig, "sqlstate", None)
        if code != "23503" and "FOREIGN KEY" not in str(error.orig):
            return None
        with self._engine.connect() as conn:
            missing = missing_agents(conn, agent_ids)
        constraint = getattr(getattr(error.orig, "diag", None), "constraint_name", None)
        return UnknownAgentError(missing, constraint) if missing else None

    async def aend_trajectory(self, trajectory_id: str, **kwargs: Any) -> None:
        """`end_trajectory` off the event loop: the database write never blocks other agents' ticks."""
        await asyncio.to_thread(self.end_trajectory, trajectory_id, **kwargs)

    def _trajectory_row(
        self,
        trajectory: _OpenTrajectory,
        now: datetime,
        final_status: str = "completed",
        final_balance: float | None = None,
        final_pnl: float | None = None,
        game_knowledge: Mapping[str, Any] | None = None,
        reward_components: Mapping[str, float] | None = None,
    ) -> dict[str, Any]:
        steps = trajectory.steps
        actions = [step.get("action") or {} for step in steps]
        total_reward = float(sum(step.get("reward") or 0.0 for step in steps))
        trades = sum(1 for a in actions if a.get("success") and a.get("actionType") in TRADE_ACTIONS)
        posts = sum(1 for a in actions if a.get("success") and a.get("actionType") in POST_ACTIONS)
        errors = sum(1 for a in actions if not a.get("success", False))
        metrics = {
            "episodeLength": len(steps),
            "finalStatus": final_status,
            "finalBalance": final_balance,
            "finalPnL": final_pnl,
            "tradesExecuted": trades,
            "postsCreated": posts,
            "errorCount": errors,
        }
        metadata = {"isTrainingData": True, **trajectory.metadata}
        if game_knowledge is not None:
            metadata["gameKnowledge"] = dict(game_knowledge)
        return {
            "id": trajectory.row_id,
            "trajectoryId": trajectory.trajectory_id,
            "agentId": trajectory.agent_id,
            "startTime": trajectory.start_time,
            "endTime": now,
            "durationMs": int((now - trajectory.start_time).total_seconds() * 1000),
            "windowId": trajectory.window_id,
            "windowHours": 1,
            "scenarioId": trajectory.scenario_id,
            "stepsJson": json.dumps(steps),
            "rewardComponentsJson": json.dumps({"environmentReward": total_reward, **(reward_components or {})}),
            "metricsJson": json.dumps({k: v for k, v in metrics.items() if v is not None}),
            "metadataJson": json.dumps(metadata),
            "totalReward": total_reward,
            "episodeLength": len(steps),
            "finalStatus": final_status,
            "finalBalance": final_balance,
            "finalPnL": final_pnl,
            "tradesExecuted": trades,
            "postsCreated": posts,
            "isTrainingData": bool(metadata.get("isTrainingData", True)),
            "createdAt": now,
            "updatedAt": now,
        }

    @contextmanager
    def trajectory(
        self,
        agent_id: str,
        scenario_id: str | None = None,
        window_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Iterator[RecordingTrajectory]:
        """Record one trajectory; it is written when the block ends, with status `error` if it raised."""
        handle = RecordingTrajectory(self, self.start_trajectory(agent_id, scenario_id, window_id, metadata))
        try:
            yield handle
        except BaseException:
            if not handle.finishing:  # a failed finish() is not written again: the same write would fail
                self.end_trajectory(handle.trajectory_id, final_status="error")
            raise
        if not handle.finished:
            handle.finish()


class RecordingTrajectory:
    """A started trajectory: the recorder's methods with the id already filled in."""

    def __init__(self, recorder: TrajectoryRecorder, trajectory_id: str) -> None:
        self.recorder = recorder
        self.trajectory_id = trajectory_id
        self.finishing = False  # finish() was called (its write may have failed)
        self.finished = False

    def start_step(self, env_state: EnvironmentState | Mapping[str, Any]) -> str:
        return self.recorder.start_step(self.trajectory_id, env_state)

    def log_provider_access(self, provider_name: str, data: Any, purpose: str) -> None:
        self.recorder.log_provider_access(self.trajectory_id, provider_name, data, purpose)

    def log_llm_call(self, **call: Any) -> str:
        return self.recorder.log_llm_call(self.trajectory_id, **call)

    def complete_step(self, action: Action | Mapping[str, Any], reward: float) -> None:
        self.recorder.complete_step(self.trajectory_id, action, reward)

    def finish(self, final_status: str = "completed", **outcome: Any) -> None:
        self.finishing = True
        self.recorder.end_trajectory(self.trajectory_id, final_status=final_status, **outcome)
        self.finished = True
