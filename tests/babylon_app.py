"""Rows as the Babylon app writes them: raw SQL with its conventions, never through our SDK."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

APP_SCHEMA = (Path(__file__).parent / "fixtures" / "babylon_app_schema.sql").read_text()

INSERT_TRAJECTORY = sa.text(
    'INSERT INTO trajectories (id, "trajectoryId", "agentId", "startTime", "endTime", "durationMs", "windowId", '
    '"scenarioId", "stepsJson", "rewardComponentsJson", "metricsJson", "metadataJson", "totalReward", '
    '"episodeLength", "finalStatus", "finalBalance", "finalPnL", "tradesExecuted", "postsCreated", "updatedAt") '
    "VALUES (:id, :trajectoryId, :agentId, :startTime, :endTime, :durationMs, :windowId, :scenarioId, :stepsJson, "
    ":rewardComponentsJson, :metricsJson, :metadataJson, :totalReward, :episodeLength, :finalStatus, "
    ":finalBalance, :finalPnL, :tradesExecuted, :postsCreated, now())"
)
INSERT_CALL_LOG = sa.text(
    'INSERT INTO llm_call_logs (id, "trajectoryId", "stepId", "callId", "timestamp", model, purpose, "systemPrompt", '
    '"userPrompt", "messagesJson", response, temperature, "maxTokens", "promptTokens", "completionTokens") '
    "VALUES (:id, :trajectoryId, :stepId, :callId, :timestamp, :model, :purpose, :systemPrompt, :userPrompt, "
    ":messagesJson, :response, :temperature, :maxTokens, :promptTokens, :completionTokens)"
)
INSERT_AGENT_USER = sa.text(
    'INSERT INTO "User" (id, username, "isAgent", "updatedAt") VALUES (:id, :id, true, now()) ON CONFLICT DO NOTHING'
)


def create_app_tables(conn: sa.Connection) -> None:
    conn.exec_driver_sql(APP_SCHEMA)  # psycopg2 runs the whole script in one call


def create_agent_users(conn: sa.Connection, agent_ids) -> None:
    """The app makes an agent a `User` before it records anything: trajectories."agentId" references it."""
    if ids := sorted(set(agent_ids)):
        conn.execute(INSERT_AGENT_USER, [{"id": agent_id} for agent_id in ids])


def app_trajectory(
    row_id: str,
    *,
    agent: str,
    start: datetime,
    steps: list | str,
    window_id: str | None,
    scenario_id: str | None,
    total_reward: float = 1.0,
    metadata: dict | str | None = None,
    final_pnl: float | None = None,
) -> dict:
    return {
        "id": row_id,
        "trajectoryId": f"traj-{row_id}",
        "agentId": agent,
        "startTime": start,
        "endTime": start,
        "durationMs": 1200,
        "windowId": window_id,
        "scenarioId": scenario_id,
        "stepsJson": steps if isinstance(steps, str) else json.dumps(steps),
        "rewardComponentsJson": json.dumps({"environmentReward": total_reward}),
        "metricsJson": json.dumps({"episodeLength": 2, "finalStatus": "completed", "tradesExecuted": 0, "postsCreated": 0, "errorCount": 0}),
        "metadataJson": metadata if isinstance(metadata, str) else json.dumps(metadata or {"isTrainingData": True}),
        "totalReward": total_reward,
        "episodeLength": 2,
        "finalStatus": "completed",
        "finalBalance": 1000.0,
        "finalPnL": final_pnl,
        "tradesExecuted": 0,
        "postsCreated": 0,
    }


def recorder_step(n: int, *, pnl: float, with_call: bool, timestamp_ms: int) -> dict:
    """A step in the TypeScript recorder's shape: keys that were undefined are absent."""
    step = {
        "stepNumber": n,
        "timestamp": timestamp_ms,
        "environmentState": {"agentBalance": 1000 + pnl, "agentPnL": pnl, "openPositions": 1, "timestamp": timestamp_ms},
        "providerAccesses": [{"providerName": "markets", "data": {"count": 3}, "purpose": "observe"}],
        "llmCalls": [],
        "action": {
            "actionType": "TRADING_DECISION",
            "parameters": {"method": "buy", "pnlChange": 5.0, "initialPnL": pnl, "finalPnL": pnl + 5, "marketId": "m1", "side": "YES", "marketType": "prediction"},
            "success": True,
        },
        "reward": 0.5,
    }
    if with_call:
        step["llmCalls"] = [
            {
                "model": "qwen-2.5-7b",
                "systemPrompt": "You are Ava, a trader.",
                "userPrompt": f"tick {n}: markets...",
                "response": f'I think YES. {{"action": "BUY_SHARES", "n": {n}}}',
                "temperature": 0.7,
                "maxTokens": 512,
                "purpose": "action",
                "actionType": "TRADING_DECISION",
            }
        ]
    return step


def logger_step(n: int, *, pnl: float, call_id: str | None, timestamp_ms: int) -> dict:
    """A step in the logger plugin's shape: stepId, observation, done, metadata and the richer sub-objects."""
    calls = []
    if call_id is not None:
        calls = [
            {
                "callId": call_id,
                "timestamp": timestamp_ms,
                "model": "gpt-4o-mini",
                "systemPrompt": "You are Bo.",
                "userPrompt": f"observe {n}",
                "messages": [
                    {"role": "system", "content": "You are Bo."},
                    {"role": "user", "content": f"observe {n}"},
                ],
                "response": "posting",
                "temperature": 1.0,
                "maxTokens": 256,
                "topP": 0.9,
                "promptTokens": 120,
                "completionTokens": 30,
                "purpose": "other",
            }
        ]
    return {
        "stepId": f"step-uuid-{n}",
        "stepNumber": n,
        "timestamp": timestamp_ms,
        "observation": {"feed": ["p1"]},
        "done": False,
        "metadata": {"source": "plugin"},
        "environmentState": {
            "agentBalance": 500.0,
            "agentPnL": pnl,
            "openPositions": 0,
            "agentPoints": 12,
            "portfolioValue": 510.0,
            "unreadMessages": 2,
            "recentEngagement": 4,
            "custom": {"mood": "ok"},
        },
        "providerAccesses": [
            {"providerId": "pa-1", "providerName": "feed", "timestamp": timestamp_ms, "query": {"limit": 5}, "data": [1], "purpose": "read"}
        ],
        "llmCalls": calls,
        "action": {
            "attemptId": f"att-{n}",
            "timestamp": timestamp_ms,
            "actionType": "CREATE_POST",
            "actionName": "createPost",
            "parameters": {"postId": f"post-{n}"},
            "success": True,
            "llmCallId": call_id,
            "immediateReward": 0.1,
        },
        "reward": 0.1,
    }
