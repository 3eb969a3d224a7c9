"""SQLAlchemy Core definitions of the Babylon tables, exactly as Prisma creates them.

Quoted camelCase columns, TEXT ids, TEXT JSON columns, `TIMESTAMP(3)` holding UTC and an
`updatedAt` without default. The same definitions create the embedded SQLite store.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData()

Timestamp = sa.DateTime().with_variant(postgresql.TIMESTAMP(precision=3), "postgresql")
JsonB = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
NOW = sa.text("CURRENT_TIMESTAMP")


def _id() -> sa.Column:
    return sa.Column("id", sa.Text, primary_key=True)


def _created_at() -> sa.Column:
    return sa.Column("createdAt", Timestamp, nullable=False, server_default=NOW)


trajectories = sa.Table(
    "trajectories",
    metadata,
    _id(),
    sa.Column("trajectoryId", sa.Text, nullable=False),
    sa.Column("agentId", sa.Text, nullable=False),
    sa.Column("startTime", Timestamp, nullable=False),
    sa.Column("endTime", Timestamp, nullable=False),
    sa.Column("durationMs", sa.Integer, nullable=False),
    sa.Column("windowId", sa.String(50)),
    sa.Column("windowHours", sa.Integer, nullable=False, server_default=sa.text("1")),
    sa.Column("episodeId", sa.Text),
    sa.Column("scenarioId", sa.Text),
    sa.Column("batchId", sa.String(100)),
    sa.Column("stepsJson", sa.Text, nullable=False),
    sa.Column("rewardComponentsJson", sa.Text, nullable=False),
    sa.Column("metricsJson", sa.Text, nullable=False),
    sa.Column("metadataJson", sa.Text, nullable=False),
    sa.Column("totalReward", sa.Double, nullable=False),
    sa.Column("episodeLength", sa.Integer, nullable=False),
    sa.Column("finalStatus", sa.Text, nullable=False),
    sa.Column("finalBalance", sa.Double),
    sa.Column("finalPnL", sa.Double),
    sa.Column("tradesExecuted", sa.Integer),
    sa.Column("postsCreated", sa.Integer),
    sa.Column("aiJudgeReward", sa.Double),
    sa.Column("aiJudgeReasoning", sa.Text),
    sa.Column("judgedAt", Timestamp),
    sa.Column("isTrainingData", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("isEvaluation", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("usedInTraining", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("trainedInBatch", sa.Text),
    _created_at(),
    sa.Column("updatedAt", Timestamp, nullable=False),
    sa.Index("trajectories_trajectoryId_key", "trajectoryId", unique=True),
    sa.Index("trajectories_windowId_idx", "windowId"),
    sa.Index("trajectories_windowId_agentId_idx", "windowId", "agentId"),
    sa.Index("trajectories_scenarioId_createdAt_idx", "scenarioId", "createdAt"),
    sa.Index("trajectories_agentId_startTime_idx", "agentId", "startTime"),
    sa.Index("trajectories_isTrainingData_usedInTraining_idx", "isTrainingData", "usedInTraining"),
    sa.Index("trajectories_trainedInBatch_idx", "trainedInBatch"),
    sa.Index("trajectories_aiJudgeReward_idx", "aiJudgeReward"),
)

llm_call_logs = sa.Table(
    "llm_call_logs",
    metadata,
    _id(),
    sa.Column("trajectoryId", sa.Text, nullable=False),
    sa.Column("stepId", sa.Text, nullable=False),
    sa.Column("callId", sa.Text, nullable=False),
    sa.Column("timestamp", Timestamp, nullable=False),
    sa.Column("latencyMs", sa.Integer),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("purpose", sa.Text, nullable=False),
    sa.Column("actionType", sa.Text),
    sa.Column("systemPrompt", sa.Text, nullable=False),
    sa.Column("userPrompt", sa.Text, nullable=False),
    sa.Column("messagesJson", sa.Text),
    sa.Column("response", sa.Text, nullable=False),
    sa.Column("reasoning", sa.Text),
    sa.Column("temperature", sa.Double, nullable=False),
    sa.Column("maxTokens", sa.Integer, nullable=False),
    sa.Column("topP", sa.Double),
    sa.Column("promptTokens", sa.Integer),
    sa.Column("completionTokens", sa.Integer),
    sa.Column("totalTokens", sa.Integer),
    sa.Column("metadata", sa.Text),
    _created_at(),
    sa.Index("llm_call_logs_callId_key", "callId", unique=True),
    sa.Index("llm_call_logs_trajectoryId_idx", "trajectoryId"),
    sa.Index("llm_call_logs_trajectoryId_stepId_idx", "trajectoryId", "stepId"),
)

training_batches = sa.Table(
    "training_batches",
    metadata,
    _id(),
    sa.Column("batchId", sa.Text, nullable=False),
    sa.Column("scenarioId", sa.Text),
    sa.Column("baseModel", sa.Text, nullable=False),
    sa.Column("modelVersion", sa.Text, nullable=False),
    sa.Column("trajectoryIds", sa.Text, nullable=False),
    sa.Column("rankingsJson", sa.Text),
    sa.Column("rewardsJson", sa.Text, nullable=False),
    sa.Column("trainingLoss", sa.Double),
    sa.Column("policyImprovement", sa.Double),
    sa.Column("status", sa.Text, nullable=False, server_default=sa.text("'pending'")),
    sa.Column("error", sa.Text),
    _created_at(),
    sa.Column("startedAt", Timestamp),
    sa.Column("completedAt", Timestamp),
    sa.Index("training_batches_batchId_key", "batchId", unique=True),
    sa.Index("training_batches_status_createdAt_idx", "status", "createdAt"),
)

trained_models = sa.Table(
    "trained_models",
    metadata,
    _id(),
    sa.Column("modelId", sa.Text, nullable=False),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("baseModel", sa.Text, nullable=False),
    sa.Column("trainingBatch", sa.Text),
    sa.Column("status", sa.Text, nullable=False, server_default=sa.text("'training'")),
    sa.Column("deployedAt", Timestamp),
    sa.Column("archivedAt", Timestamp),
    sa.Column("storagePath", sa.Text, nullable=False),
    sa.Column("benchmarkScore", sa.Double),
    sa.Column("accuracy", sa.Double),
    sa.Column("avgReward", sa.Double),
    sa.Column("evalMetrics", JsonB),
    sa.Column("wandbRunId", sa.Text),
    sa.Column("wandbArtifactId", sa.Text),
    sa.Column("agentsUsing", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("totalInferences", sa.Integer, nullable=False, server_default=sa.text("0")),
    _created_at(),
    sa.Column("updatedAt", Timestamp, nullable=False),
    sa.Index("trained_models_modelId_key", "modelId", unique=True),
    sa.Index("trained_models_status_idx", "status"),
    sa.Index("trained_models_version_idx", "version"),
)

reward_judgments = sa.Table(
    "reward_judgments",
    metadata,
    _id(),
    sa.Column("trajectoryId", sa.Text, nullable=False),
    sa.Column("judgeModel", sa.Text, nullable=False),
    sa.Column("judgeVersion", sa.Text, nullable=False),
    sa.Column("overallScore", sa.Double, nullable=False),
    sa.Column("componentScoresJson", sa.Text),
    sa.Column("rank", sa.Integer),
    sa.Column("normalizedScore", sa.Double),
    sa.Column("groupId", sa.Text),
    sa.Column("reasoning", sa.Text, nullable=False),
    sa.Column("strengthsJson", sa.Text),
    sa.Column("weaknessesJson", sa.Text),
    sa.Column("criteriaJson", sa.Text, nullable=False),
    sa.Column("judgedAt", Timestamp, nullable=False, server_default=NOW),
    sa.Index("reward_judgments_trajectoryId_key", "trajectoryId", unique=True),
    sa.Index("reward_judgments_overallScore_idx", "overallScore"),
    sa.Index("reward_judgments_groupId_rank_idx", "groupId", "rank"),
)

market_outcomes = sa.Table(
    "market_outcomes",
    metadata,
    _id(),
    sa.Column("windowId", sa.String(50), nullable=False),
    sa.Column("stockTicker", sa.Text),
    sa.Column("startPrice", sa.Double),
    sa.Column("endPrice", sa.Double),
    sa.Column("changePercent", sa.Double),
    sa.Column("sentiment", sa.Text),
    sa.Column("newsEvents", JsonB),
    sa.Column("predictionMarketId", sa.Text),
    sa.Column("question", sa.Text),
    sa.Column("outcome", sa.Text),
    sa.Column("finalProbability", sa.Double),
    sa.Column("volume", sa.Double),
    _created_at(),
    sa.Index("market_outcomes_windowId_idx", "windowId"),
    sa.Index("market_outcomes_windowId_stockTicker_idx", "windowId", "stockTicker"),
)

BABYLON_TABLES = tuple(metadata.sorted_tables)

# The pipeline's own tables, beside the app's: never part of adopting the app's schema (BABYLON_TABLES),
# created by their own alembic revisions.
pipeline_metadata = sa.MetaData()

deployment = sa.Table(
    "babylon_deployment",
    pipeline_metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),  # always 1: the one deployment
    sa.Column("in_service", sa.Text),  # NULL: the base serves
    sa.Column("canary", sa.Text),
    sa.Column("canary_fraction", sa.Double, nullable=False, server_default=sa.text("0")),
    sa.Column("stage", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("salt", sa.Text, nullable=False, server_default=sa.text("''")),
    sa.Column("canary_started_at", Timestamp),
    sa.Column("changed_at", Timestamp),  # NULL: never changed by the pipeline (a legacy database, not adopted yet)
    sa.CheckConstraint("id = 1", name="babylon_deployment_one_row"),
)

deployment_history = sa.Table(
    "babylon_deployment_history",
    pipeline_metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", Timestamp, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("version", sa.Text),
    sa.Column("from_version", sa.Text),
    sa.Column("fraction", sa.Double),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Index("babylon_deployment_history_at_idx", "at"),
)

PIPELINE_TABLES = tuple(pipeline_metadata.sorted_tables)
