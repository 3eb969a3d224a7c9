"""Simulated agents routed by the deployment: each agent is answered by the version `route` gives it.

`RoutedPolicies` is a `policy_for` for `sim.simulate`: one policy object per version, made on first
use (a local model is loaded once, and a batch-capable policy answers all its agents in one batch),
and a count of the agents each version got. The deployment is read once, by the caller: an agent
keeps its version for the whole simulation, as it would between two changes of the deployment.
Every answer carries its version (`PolicyResponse.model_version`), which the recorder writes on the
LLM call, so windows split by version.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from babylon_pipeline.serving.routing import route
from babylon_pipeline.serving.state import Deployment
from babylon_pipeline.sim.personas import AgentProfile
from babylon_pipeline.sim.policy import Policy


class RoutedPolicies:
    def __init__(self, deployment: Deployment, policy_of: Callable[[str | None], Policy]) -> None:
        self.deployment = deployment
        self._policy_of = policy_of
        self._policies: dict[str | None, Policy] = {}
        self.agents: Counter[str | None] = Counter()

    def __call__(self, agent: AgentProfile) -> Policy:
        version = route(agent.agent_id, self.deployment)
        self.agents[version] += 1
        if version not in self._policies:
            self._policies[version] = self._policy_of(version)
        return self._policies[version]

    def describe(self) -> str:
        """`v1.0.0: 18 agents, v1.1.0 (canary, 10 %): 2 agents`; the base is `base`."""
        def label(version: str | None) -> str:
            if version is not None and version == self.deployment.canary:
                return f"{version} (canary, {self.deployment.canary_fraction:.0%})"
            return version or "base"

        order = sorted(self.agents, key=lambda v: (v == self.deployment.canary, v or ""))
        return ", ".join(f"{label(v)}: {self.agents[v]} agent{'s' if self.agents[v] != 1 else ''}" for v in order)
