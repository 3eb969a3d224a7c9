"""The benchmark's scenarios played at once: their ticks answered in one batch, results as if played alone."""

from __future__ import annotations

import threading

import pytest

from babylon_pipeline.evaluation.lockstep import LockstepBatcher
from babylon_pipeline.evaluation.play import play_scenario, play_suite
from babylon_pipeline.evaluation.suite import SuiteDefinition
from babylon_pipeline.sim.policy import PolicyRequest, PolicyResponse

SUITE = SuiteDefinition(name="lockstep-test", scenarios=5, agents=2, ticks=3)


class _FirstMarketBuyer:
    """A batch policy that buys YES on the first market shown, $40 per answer, and keeps its batch sizes."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def act(self, system_prompt, user_prompt, observation):
        return self.act_batch([PolicyRequest(system_prompt, user_prompt, observation)])[0]

    def act_batch(self, requests):
        self.batches.append(len(requests))
        text = '{"action": "BUY_SHARES", "parameters": {"marketId": "M1", "side": "YES", "amount": 40}}'
        return [PolicyResponse(text, "buyer", 1.0, 8) for _ in requests]


def test_a_suite_is_played_in_one_batch_per_tick_with_the_figures_of_scenarios_played_alone(tmp_path) -> None:
    together = _FirstMarketBuyer()
    plays = play_suite(together, SUITE, tmp_path)
    assert together.batches == [SUITE.scenarios * SUITE.agents] * SUITE.ticks
    alone = [play_scenario(_FirstMarketBuyer(), SUITE, seed, tmp_path) for seed in SUITE.seeds]
    strip = lambda p: {k: v for k, v in p.as_dict().items() if k != "seconds"}  # noqa: E731
    assert [strip(p) for p in plays] == [strip(p) for p in alone]
    assert [p.seed for p in plays] == SUITE.seeds and all(p.trades == p.steps for p in plays)


def test_a_failing_batch_reaches_every_waiting_scenario_and_a_seat_that_left_is_not_waited_for() -> None:
    class Failing:
        def act_batch(self, requests):
            raise RuntimeError("the model is gone")

    batcher = LockstepBatcher(Failing(), seats=3)
    batcher.leave(2)  # its simulation ended before asking
    errors: list[BaseException] = []

    def ask(seat: int) -> None:
        try:
            batcher.seat(seat).act_batch([PolicyRequest("s", "u", None)])  # type: ignore[arg-type]
        except RuntimeError as error:
            errors.append(error)

    threads = [threading.Thread(target=ask, args=(seat,)) for seat in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(t.is_alive() for t in threads)
    assert [str(e) for e in errors] == ["the model is gone"] * 2
    with pytest.raises(RuntimeError, match="gone"):
        LockstepBatcher(Failing(), seats=1).seat(0).act_batch([])
