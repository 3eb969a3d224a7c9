"""The simulated agents: who they are (persona, rendered into the system prompt) and how they
decide (a policy kind), both fixed by the seed so an agent is the same agent in every window."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from babylon_pipeline.sim.determinism import stream

POLICY_KINDS = ("informed", "noisy", "contrarian", "random")
DEFAULT_POLICY_MIX: Mapping[str, float] = {"informed": 0.25, "noisy": 0.35, "contrarian": 0.15, "random": 0.25}


@dataclass(frozen=True)
class AgentProfile:
    agent_id: str
    index: int
    name: str
    handle: str
    archetype: str
    bio: str
    style: str
    risk: float  # 0.2 (cautious) … 1.0 (aggressive): scales position sizes
    policy_kind: str

    @property
    def risk_word(self) -> str:
        return "high" if self.risk >= 0.75 else "moderate" if self.risk >= 0.45 else "low"


_FIRST = ("Ada", "Basil", "Cleo", "Dario", "Esme", "Felix", "Greta", "Hugo", "Iris", "Jonas", "Kira",
          "Leo", "Mira", "Nico", "Opal", "Pavel", "Quinn", "Rosa", "Silas", "Tess", "Umar", "Vera",
          "Wes", "Xena", "Yusuf", "Zoe")
_LAST = ("Vance", "Okafor", "Lindqvist", "Moreau", "Tanaka", "Reyes", "Novak", "Haddad", "Kowalski",
         "Brennan", "Sato", "Oyelaran", "Castillo", "Weber", "Iyer", "Duarte")
_ARCHETYPES = (
    ("momentum trader", "Chases what is moving and cuts losers fast.", "punchy, uses trader slang"),
    ("skeptical analyst", "Trusts numbers over narratives and double-checks sources.", "dry and precise"),
    ("degen gambler", "Lives for asymmetric bets and loud calls.", "excitable, emoji-prone"),
    ("macro thinker", "Connects headlines to the bigger picture before acting.", "measured, long sentences"),
    ("value investor", "Buys what is cheap relative to the odds and waits.", "calm and patient"),
    ("news hound", "Reads every post and reacts to fresh information.", "fast, headline-style"),
    ("contrarian", "Assumes the crowd is usually wrong.", "sardonic"),
)


def _mix(policy_mix: Mapping[str, float] | None) -> tuple[list[str], list[float]]:
    mix = dict(DEFAULT_POLICY_MIX if policy_mix is None else policy_mix)
    unknown = set(mix) - set(POLICY_KINDS)
    if unknown:
        raise ValueError(f"unknown policy kinds {sorted(unknown)}; known: {POLICY_KINDS}")
    if not mix or any(weight < 0 for weight in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError(f"policy_mix needs non-negative weights with a positive sum: {mix}")
    kinds = [kind for kind in POLICY_KINDS if mix.get(kind, 0) > 0]
    return kinds, [mix[kind] for kind in kinds]


def agent_id_prefix(seed: int) -> str:
    return f"sim-{seed}-agent-"


def make_agents(seed: int, count: int, policy_mix: Mapping[str, float] | None = None) -> list[AgentProfile]:
    """`count` agents. Policy kinds are dealt in proportion to the mix (largest remainder), then
    shuffled, so even a small roster has every kind with a positive weight."""
    kinds, weights = _mix(policy_mix)
    rng = stream(seed, "agents")
    quotas = [count * w / sum(weights) for w in weights]
    dealt = [int(q) for q in quotas]
    for i in sorted(range(len(kinds)), key=lambda i: dealt[i] - quotas[i])[: count - sum(dealt)]:
        dealt[i] += 1
    assigned = [kind for kind, n in zip(kinds, dealt, strict=True) for _ in range(n)]
    rng.shuffle(assigned)
    return [_profile(seed, i, kind, rng) for i, kind in enumerate(assigned)]


def _profile(seed: int, index: int, kind: str, rng: random.Random) -> AgentProfile:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    archetype, bio, style = rng.choice(_ARCHETYPES)
    return AgentProfile(
        agent_id=f"{agent_id_prefix(seed)}{index:04d}",
        index=index,
        name=f"{first} {last}",
        handle=f"{first.lower()}_{last.lower()}_{index}",
        archetype=archetype,
        bio=bio,
        style=style,
        risk=round(rng.uniform(0.2, 1.0), 2),
        policy_kind=kind,
    )
