"""Grading standards the judge applies, selectable by name (`GENERAL` unless configured).

The general rubric follows the idea of ART's RULER default: the judge reads the task from the
trajectories themselves, so a rubric only says how to rank attempts against each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from textwrap import dedent


@dataclass(frozen=True)
class Rubric:
    name: str
    text: str


GENERAL = Rubric(
    "general",
    dedent("""\
        - Reaching the goal matters most: a trajectory that reaches it must score clearly above one that does not.
        - Between trajectories that both reach it, the more direct one (fewer wasted, repeated or unproductive
          steps) scores higher.
        - Let score gaps mirror quality gaps: near-equal trajectories get near-equal scores, a much better one
          gets a much higher score.
        - Real progress toward the goal earns partial credit even when the goal is not reached.
    """),
)

BABYLON_TRADING = Rubric(
    "babylon_trading",
    dedent("""\
        The agents play Babylon, a social prediction-market game: within one hour they read a feed, trade
        prediction markets (YES/NO shares) and perpetual stocks, and write posts and comments. Judge each
        trajectory on the following, most important first:
        - Profit and loss: the window P&L in its <outcome> counts most. A gain beats a loss and a larger gain a
          smaller one, but a gain from a reckless bet is worth less than a similar gain from a sound one.
        - Prediction accuracy: the sides it took agree with how the markets resolved, and any probabilities it
          stated were calibrated rather than overconfident.
        - Timing: it entered before prices moved its way and left before they turned, instead of chasing moves
          that had already happened or holding on after its reason for the trade was gone.
        - Risk: position sizes fit its balance and its conviction; no all-in bets, no piling into one market,
          losers are cut.
        - Post quality: posts and comments are specific, informative and consistent with its own positions;
          spam, empty hype and posts that contradict its trades count against it.
        - Failed or malformed actions count against it; doing nothing when there was a clear opportunity is a
          missed gain, while declining a poor trade is correct.
        Give partial credit for partly good play, and let score gaps mirror quality gaps.
    """),
)

RUBRICS: Mapping[str, Rubric] = {r.name: r for r in (GENERAL, BABYLON_TRADING)}


class UnknownRubric(ValueError):
    pass


def get_rubric(name: str) -> Rubric:
    try:
        return RUBRICS[name]
    except KeyError:
        raise UnknownRubric(f"unknown rubric {name!r}; known rubrics: {', '.join(sorted(RUBRICS))}") from None


def resolve_rubric(rubric: Rubric | str) -> Rubric:
    """A rubric object as given, or the registered rubric of that name."""
    return get_rubric(rubric) if isinstance(rubric, str) else rubric
