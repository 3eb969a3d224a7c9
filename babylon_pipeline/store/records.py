"""Typed records for what the Babylon tables hold.

They accept both writer shapes of `stepsJson` (the recorder's and the logger plugin's), keep
every key they do not know (`extra="allow"`), and round-trip to the app's camelCase JSON with
`model_dump(by_alias=True, exclude_none=True)`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

FinalStatus = Literal["completed", "completed_with_errors", "terminated", "error", "timeout"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, ser_json_inf_nan="constants")

    def to_json_dict(self) -> dict[str, Any]:
        """The app's JSON shape: camelCase keys, absent rather than null where undefined."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class TokenLogprob(_Record):
    """One sampled token with its log-probability under the policy that sampled it."""

    token: str
    logprob: float
    token_id: int | None = Field(default=None, alias="tokenId")


class EnvironmentState(_Record):
    agent_balance: float | None = Field(default=None, alias="agentBalance")
    agent_pnl: float | None = Field(default=None, alias="agentPnL")
    open_positions: Any = Field(default=None, alias="openPositions")
    active_markets: Any = Field(default=None, alias="activeMarkets")
    timestamp: float | None = None


class ProviderAccess(_Record):
    provider_name: str = Field(alias="providerName")
    data: Any = None
    purpose: str | None = None


class LLMCall(_Record):
    model: str
    system_prompt: str = Field(alias="systemPrompt")
    user_prompt: str = Field(alias="userPrompt")
    response: str
    temperature: float | None = None
    max_tokens: int | None = Field(default=None, alias="maxTokens")
    purpose: str = "action"
    model_version: str | None = Field(default=None, alias="modelVersion")
    reasoning: str | None = None
    latency_ms: float | None = Field(default=None, alias="latencyMs")
    action_type: str | None = Field(default=None, alias="actionType")
    call_id: str | None = Field(default=None, alias="callId")
    timestamp: float | None = None
    messages: list[dict[str, Any]] | None = None
    top_p: float | None = Field(default=None, alias="topP")
    prompt_tokens: int | None = Field(default=None, alias="promptTokens")
    completion_tokens: int | None = Field(default=None, alias="completionTokens")
    logprobs: list[TokenLogprob] | None = None

    def chat(self) -> list[dict[str, Any]]:
        """The full exchange as chat messages: the recorded `messages` when present, else rebuilt."""
        prompt = self.messages or [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": self.user_prompt},
        ]
        return [*prompt, {"role": "assistant", "content": self.response}]


class Action(_Record):
    action_type: str = Field(alias="actionType")
    parameters: dict[str, Any] = Field(default_factory=dict)
    success: bool = True
    result: Any = None
    error: str | None = None
    reasoning: str | None = None
    correctness: Any = None


class Step(_Record):
    """One tick. Its timestamp (epoch ms) and reward are finite numbers, the timestamp not negative:
    checked here, while the JSON is parsed, rather than in a Python loop over every step read."""

    step_number: int = Field(alias="stepNumber")
    timestamp: float = Field(ge=0, allow_inf_nan=False)
    environment_state: EnvironmentState = Field(default_factory=EnvironmentState, alias="environmentState")
    provider_accesses: list[ProviderAccess] = Field(default_factory=list, alias="providerAccesses")
    llm_calls: list[LLMCall] = Field(default_factory=list, alias="llmCalls")
    action: Action | None = None
    reward: float | None = Field(default=None, allow_inf_nan=False)
    step_id: str | None = Field(default=None, alias="stepId")  # logger plugin shape from here on
    observation: Any = None
    done: bool | None = None

    @property
    def has_llm_exchange(self) -> bool:
        return bool(self.llm_calls)


STEPS = TypeAdapter(list[Step])


class Trajectory(_Record):
    """One row of `trajectories`, parsed and normalised; `window_id` is never NULL here.

    What the agent did, not what the pipeline later wrote beside it (judge scores, training flags):
    exporting a window again gives the same record."""

    id: str
    trajectory_id: str = Field(alias="trajectoryId")
    agent_id: str = Field(alias="agentId")
    window_id: str = Field(alias="windowId")
    scenario_id: str | None = Field(default=None, alias="scenarioId")
    episode_id: str | None = Field(default=None, alias="episodeId")
    batch_id: str | None = Field(default=None, alias="batchId")
    start_time: datetime = Field(alias="startTime")
    end_time: datetime = Field(alias="endTime")
    duration_ms: int = Field(alias="durationMs")
    steps: list[Step]
    reward_components: dict[str, Any] = Field(default_factory=dict, alias="rewardComponents")
    metrics: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    total_reward: float = Field(alias="totalReward")
    final_status: str = Field(alias="finalStatus")
    final_balance: float | None = Field(default=None, alias="finalBalance")
    final_pnl: float | None = Field(default=None, alias="finalPnL")
    trades_executed: int | None = Field(default=None, alias="tradesExecuted")
    posts_created: int | None = Field(default=None, alias="postsCreated")
    is_training_data: bool = Field(default=True, alias="isTrainingData")
    window_id_derived: bool = Field(default=False, alias="windowIdDerived")

    @property
    def group_key(self) -> str:
        """The comparison group: the scenario, or the window when the app stored none."""
        return self.scenario_id or self.window_id

    @property
    def window_pnl(self) -> float:
        """P&L earned inside this trajectory: `agentPnL` is cumulative, so last minus first."""
        pnls = [s.environment_state.agent_pnl for s in self.steps if s.environment_state.agent_pnl is not None]
        return pnls[-1] - pnls[0] if pnls else 0.0

    @property
    def actions(self) -> list[Action]:
        return [step.action for step in self.steps if step.action is not None]

    @property
    def steps_with_llm_calls(self) -> int:
        return sum(1 for step in self.steps if step.has_llm_exchange)

    @property
    def llm_call_count(self) -> int:
        return sum(len(step.llm_calls) for step in self.steps)

    @property
    def model_versions(self) -> tuple[str | None, ...]:
        """The distinct `modelVersion`s its calls recorded, first seen first (None: a call without one)."""
        return tuple(dict.fromkeys(call.model_version for step in self.steps for call in step.llm_calls))


TRAJECTORY = TypeAdapter(Trajectory)  # dump_json gives bytes, without a str in between


class TradeRecord(BaseModel):
    """What the outcome rewards need of a `Trajectory`: its group, actions and P&L, without its
    prompts and responses (nearly all of its bytes) and six model objects instead of twenty-six;
    and what the regression watch needs: which model versions answered and how it ended (absent
    from an index written before they were added, hence their defaults)."""

    model_config = ConfigDict(populate_by_name=True, ser_json_inf_nan="constants")

    trajectory_id: str = Field(alias="trajectoryId")
    window_id: str = Field(alias="windowId")
    scenario_id: str | None = Field(default=None, alias="scenarioId")
    window_pnl: float = Field(alias="windowPnL")
    actions: list[Action]
    model_versions: tuple[str | None, ...] = Field(default=(), alias="modelVersions")
    final_status: str = Field(default="completed", alias="finalStatus")

    group_key = Trajectory.group_key

    @classmethod
    def of(cls, trajectory: Trajectory) -> TradeRecord:
        return cls(
            trajectory_id=trajectory.trajectory_id,
            window_id=trajectory.window_id,
            scenario_id=trajectory.scenario_id,
            window_pnl=trajectory.window_pnl,
            actions=trajectory.actions,
            model_versions=trajectory.model_versions,
            final_status=trajectory.final_status,
        )
