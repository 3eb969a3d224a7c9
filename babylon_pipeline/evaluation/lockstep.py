"""Several simulations in threads, their ticks answered together: one batch for every scenario of a suite.

A model answers a batch of 32 about as fast as a batch of 2 (`generate` is bound by the sequential
decode steps, not the rows), so playing the benchmark's scenarios one after another wasted most of
it. Each scenario still plays in its own simulator and store, unchanged; each gets a seat here. A
seat's tick waits until every seated scenario has asked (or left), then one `act_batch` answers all
of them, in seat order, so the batch and the random draws are the same on every run.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from babylon_pipeline.sim.observation import Observation
from babylon_pipeline.sim.policy import BatchPolicy, PolicyError, PolicyRequest, PolicyResponse


class LockstepBatcher:
    def __init__(self, policy: BatchPolicy, seats: int) -> None:
        self._policy = policy
        self._present = set(range(seats))
        self._asked: dict[int, Sequence[PolicyRequest]] = {}
        self._answered: dict[int, list[PolicyResponse | PolicyError] | BaseException] = {}
        self._turn = threading.Condition()

    def seat(self, index: int) -> _Seat:
        return _Seat(self, index)

    def ask(self, index: int, requests: Sequence[PolicyRequest]) -> list[PolicyResponse | PolicyError]:
        with self._turn:
            self._asked[index] = requests
            self._answer_if_all_asked()
            self._turn.wait_for(lambda: index in self._answered)
            answer = self._answered.pop(index)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def leave(self, index: int) -> None:
        """The seat's simulation ended (or failed): the others no longer wait for it."""
        with self._turn:
            self._present.discard(index)
            self._answer_if_all_asked()

    def _answer_if_all_asked(self) -> None:
        if not self._asked or set(self._asked) != self._present:
            return
        order = sorted(self._asked)
        merged = [request for index in order for request in self._asked[index]]
        try:
            answers = self._policy.act_batch(merged)
        except BaseException as error:  # every waiting seat learns of it, none waits forever
            self._answered |= {index: error for index in order}
        else:
            start = 0
            for index in order:
                count = len(self._asked[index])
                self._answered[index] = list(answers[start:start + count])
                start += count
        self._asked.clear()
        self._turn.notify_all()


class _Seat:
    """One simulation's policy: its ticks are answered in the batcher's shared batch."""

    def __init__(self, batcher: LockstepBatcher, index: int) -> None:
        self._batcher, self._index = batcher, index

    def act(self, system_prompt: str, user_prompt: str, observation: Observation) -> PolicyResponse:
        [answer] = self.act_batch([PolicyRequest(system_prompt, user_prompt, observation)])
        if isinstance(answer, PolicyError):
            raise answer
        return answer

    def act_batch(self, requests: Sequence[PolicyRequest]) -> list[PolicyResponse | PolicyError]:
        return self._batcher.ask(self._index, requests)
