"""Scripted policies of different skill that answer like a model: a sentence of reasoning, then JSON.

They read the observation, not the prompt text, and differ in what they make of the feed's claims:
- `informed` has a sharp private estimate of each market's odds and each ticker's drift (the
  world hands it over as `Observation.insight`) and trades where the price disagrees;
- `noisy` has a blurred estimate and a habit of posting instead of trading;
- `contrarian` trades against the feed's consensus of claims;
- `random` does anything at all.
The careless kinds sometimes answer with broken JSON, so the failure path is exercised too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from statistics import fmean

from babylon_pipeline.sim.determinism import stream
from babylon_pipeline.sim.observation import Observation
from babylon_pipeline.sim.personas import AgentProfile
from babylon_pipeline.sim.policy import PolicyResponse

SCRIPTED_MODEL = "babylon-lite-scripted"
MALFORMED_RATE = {"informed": 0.0, "noisy": 0.04, "contrarian": 0.02, "random": 0.06}
EDGE = 0.06  # how far the estimate must be from the price before a policy trades


@dataclass(frozen=True)
class _Decision:
    reasoning: str
    action: str
    parameters: dict


def _consensus(obs: Observation) -> tuple[dict[str, float], dict[str, int]]:
    """Mean claimed YES probability per market, and net claimed direction per ticker."""
    market_claims: dict[str, list[float]] = {}
    perp_votes: dict[str, int] = {}
    for post in obs.posts:
        claim = post.claim
        if claim is None:
            continue
        if claim.kind == "market" and claim.probability is not None:
            market_claims.setdefault(claim.subject, []).append(claim.probability)
        elif claim.kind == "perp":
            perp_votes[claim.subject] = perp_votes.get(claim.subject, 0) + claim.direction
    return {m: fmean(ps) for m, ps in market_claims.items()}, perp_votes


class ScriptedPolicy:
    def __init__(self, agent: AgentProfile, seed: int) -> None:
        self.agent = agent
        self.kind = agent.policy_kind
        self._rng = stream(seed, "policy", agent.agent_id)

    def act(self, system_prompt: str, user_prompt: str, observation: Observation) -> PolicyResponse:
        decision = self._decide(observation)
        text = self._render(decision)
        return PolicyResponse(text=text, model=f"{SCRIPTED_MODEL}-{self.kind}", temperature=1.0, max_tokens=256,
                              prompt_tokens=len(system_prompt.split()) + len(user_prompt.split()),
                              completion_tokens=len(text.split()))

    def _stake(self, obs: Observation) -> float:
        return round(max(1.0, min(obs.balance, obs.balance * 0.08 * self.agent.risk * self._rng.uniform(0.5, 1.5))), 2)

    def _decide(self, obs: Observation) -> _Decision:
        rng = self._rng
        if self.kind == "random" or (self.kind == "noisy" and rng.random() < 0.25):
            return self._anything(obs)
        if obs.insight:
            beliefs = {m.market_id: obs.insight[m.market_id] for m in obs.markets if m.market_id in obs.insight}
            votes = {p.ticker: (1 if obs.insight[p.ticker] > 0 else -1) for p in obs.perps if p.ticker in obs.insight}
        else:
            beliefs, votes = _consensus(obs)
        sign = -1.0 if self.kind == "contrarian" else 1.0
        best = None
        for market in obs.markets:
            if market.market_id not in beliefs:
                continue
            estimate = beliefs[market.market_id]
            gap = sign * (estimate - market.yes_price)
            if abs(gap) > EDGE and (best is None or abs(gap) > abs(best[1])):
                best = (market, gap, estimate)
        if best is not None:
            market, gap, estimate = best
            side = "YES" if gap > 0 else "NO"
            return _Decision(
                f"I put [{market.handle}] near {estimate:.0%} against a price of {market.yes_price:.0%}; "
                f"{'the market is wrong' if sign > 0 else 'the crowd is wrong, I fade it'}: buying {side}.",
                "BUY_SHARES", {"marketId": market.handle, "side": side, "amount": self._stake(obs)})
        voted = [(ticker, sign * v) for ticker, v in votes.items() if v and obs.perp(ticker)]
        if voted:
            ticker, direction = max(voted, key=lambda tv: (abs(tv[1]), tv[0]))
            side = "long" if direction > 0 else "short"
            return _Decision(f"Posts lean {'bullish' if direction * sign > 0 else 'bearish'} on ${ticker}; going {side}.",
                             "OPEN_PERP", {"ticker": ticker, "side": side, "size": self._stake(obs)})
        return _Decision("Nothing in the feed beats the prices yet; waiting.", "HOLD", {})

    def _anything(self, obs: Observation) -> _Decision:
        rng = self._rng
        choice = rng.choice(("buy", "perp", "post", "comment", "hold"))
        if choice == "buy" and obs.markets:
            market = rng.choice(obs.markets)
            side = rng.choice(("YES", "NO"))
            return _Decision(f"Gut says {side} on [{market.handle}].", "BUY_SHARES",
                             {"marketId": market.handle, "side": side, "amount": self._stake(obs)})
        if choice == "perp" and obs.perps:
            perp = rng.choice(obs.perps)
            side = rng.choice(("long", "short"))
            return _Decision(f"${perp.ticker} feels {side} today.", "OPEN_PERP",
                             {"ticker": perp.ticker, "side": side, "size": self._stake(obs)})
        if choice == "comment" and obs.posts:
            post = rng.choice(obs.posts)
            return _Decision("Worth a reply.", "CREATE_COMMENT",
                             {"postId": post.handle, "content": rng.choice(("Source?", "Fading this.", "Agreed, loading up."))})
        if choice in ("post", "comment") and obs.markets:
            market = rng.choice(obs.markets)
            return _Decision("Time to share a take.", "CREATE_POST",
                             {"content": f"My read on {market.question} — {rng.choice(('no chance', 'easy YES', 'coin flip'))}."})
        return _Decision("Sitting this tick out.", "HOLD", {})

    def _render(self, decision: _Decision) -> str:
        payload = json.dumps({"action": decision.action, "parameters": decision.parameters})
        if self._rng.random() < MALFORMED_RATE[self.kind]:
            return f"{decision.reasoning}\n{payload[: len(payload) // 2]}"  # cut off mid-object, as models do
        if self._rng.random() < 0.5:
            return f"{decision.reasoning}\n```json\n{payload}\n```"
        return f"{decision.reasoning} {payload}"
