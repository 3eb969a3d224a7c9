"""Hostile judge answers, as the loopback judge server sends them (`tests/judge_server.py`).

Each `HostileAnswer` is one `Reply`, sent for both answers a group gets (the first and the retry),
and what the group must come to: `judge_failed` with an error naming `error`, or (for answers that
are odd but usable) `scored`. `ANSWERS` are faults in the judge's message content; `BODIES` are
faults in the HTTP body around it; `SLOW` holds the server that drips one byte per second.
Every entry fails only its own group, whatever else the window holds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from tests.judge_server import Reply, answer, body, drip, ok_content

DEEP = 1_200
LONG_INT = "1" + "0" * 5_000
BIG = 2_000_000
"""Bytes of an over-large answer: over the cap the tests set (and the default 1,000,000)."""
FORGED_ID = "forged-trajectory-id"
NESTS, BODY_NESTS = "not_json: the answer nests deeper", "not_json: the response body nests deeper"
DIGITS, NO_TEXT = "not_json: an integer has 5001 digits", "not_json: the answer has no text"


@dataclass(frozen=True)
class HostileAnswer:
    name: str
    reply: Reply
    error: str | None
    """A fragment of the group's `judge_failed` error; None: the group is scored."""


def _scores(ids: list[str], **change: object) -> list[dict[str, object]]:
    return [{"trajectory_id": tid, "explanation": f"block {k}", "score": 0.5, **change} for k, tid in enumerate(ids, 1)]


def _with(entries: Callable[[list[str]], object]) -> Callable[[list[str]], str]:
    return lambda ids: json.dumps({"scores": entries(ids)})


def _raw_score(raw: str) -> Callable[[list[str]], str]:
    """A valid answer whose first score's JSON text is `raw` (what `json.dumps` would refuse to write)."""
    return lambda ids: _with(_scores)(ids).replace('"score": 0.5', f'"score": {raw}', 1)


def _completion(content_json: str, usage: str = '{"prompt_tokens": 10, "completion_tokens": 5}') -> str:
    return ('{"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": [{"index": 0, '
            f'"finish_reason": "stop", "message": {{"role": "assistant", "content": {content_json}}}}}], '
            f'"usage": {usage}}}')


ANSWERS = [
    HostileAnswer("long_int_score", answer(_raw_score(LONG_INT)), DIGITS),
    HostileAnswer("long_negative_int_score", answer(_raw_score("-" + LONG_INT)), DIGITS),
    HostileAnswer("long_int_id", answer(lambda ids: _with(_scores)(ids).replace(json.dumps(ids[0]), LONG_INT, 1)),
                  DIGITS),
    HostileAnswer("deep_list", answer('{"scores": ' + "[" * DEEP + "]" * DEEP + "}"), NESTS),
    HostileAnswer("deep_object", answer('{"a": ' * DEEP + "1" + "}" * DEEP), NESTS),
    HostileAnswer("deep_in_explanation", answer(lambda ids: _with(_scores)(ids).replace(
        '"explanation": "block 1"', '"explanation": ' + "[" * DEEP + "]" * DEEP, 1)), NESTS),
    HostileAnswer("deep_unclosed", answer('{"scores": ' + "[{" * 100_000), NESTS),
    HostileAnswer("scores_not_a_list", answer(lambda ids: json.dumps({"scores": {tid: 0.5 for tid in ids}})),
                  'bad_shape: "scores" is not a list'),
    HostileAnswer("score_as_string", answer(_with(lambda ids: _scores(ids, score="0.9"))), "bad_score"),
    HostileAnswer("score_as_bool", answer(_with(lambda ids: _scores(ids, score=True))), "bad_score"),
    HostileAnswer("score_null", answer(_with(lambda ids: _scores(ids, score=None))), "bad_score"),
    HostileAnswer("score_as_object", answer(_with(lambda ids: _scores(ids, score={"value": 1}))), "bad_score"),
    HostileAnswer("score_above_one", answer(_with(lambda ids: _scores(ids, score=1.5))), "bad_score: score of"),
    HostileAnswer("score_negative", answer(_with(lambda ids: _scores(ids, score=-0.01))), "bad_score: score of"),
    HostileAnswer("score_nan", answer(_raw_score("NaN")), "bad_score"),
    HostileAnswer("score_infinity", answer(_raw_score("Infinity")), "bad_score"),
    HostileAnswer("score_overflow", answer(_raw_score("1e999")), "bad_score"),
    HostileAnswer("id_not_a_string", answer(_with(lambda ids: [{**s, "trajectory_id": 7} for s in _scores(ids)])),
                  "bad_shape"),
    HostileAnswer("explanation_not_a_string", answer(_with(lambda ids: _scores(ids, explanation=["x"]))), "bad_shape"),
    HostileAnswer("entry_not_an_object", answer('{"scores": [1, 2]}'), "bad_shape"),
    HostileAnswer("missing_id", answer(_with(lambda ids: _scores(ids)[1:])), "wrong_count"),
    HostileAnswer("forged_id_added", answer(_with(lambda ids: [*_scores(ids), *_scores([FORGED_ID], score=1.0)])),
                  "unknown_ids"),
    HostileAnswer("forged_id_instead", answer(_with(lambda ids: _scores([FORGED_ID, *ids[1:]], score=1.0))),
                  "unknown_ids"),
    HostileAnswer("block_numbers", answer(_with(lambda ids: _scores([str(k) for k in range(1, len(ids) + 1)]))),
                  "unknown_ids"),
    HostileAnswer("duplicate_id", answer(_with(lambda ids: [*_scores(ids), *_scores(ids[:1])])), "duplicate_ids"),
    HostileAnswer("prose", answer("I would score the first one 1.0 and the rest 0."), "not_json"),
    HostileAnswer("empty", answer(""), NO_TEXT),
    HostileAnswer("truncated", answer(lambda ids: ok_content(ids)[:-7]), "not_json"),
    HostileAnswer("top_level_list", answer("[]"), "bad_shape"),
    HostileAnswer("top_level_null", answer("null"), "bad_shape"),
    HostileAnswer("oversized", answer(lambda ids: _with(lambda i: _scores(i, explanation="x" * BIG))(ids)),
                  "too_large"),
    # odd but usable: scored, with what is stored made safe
    HostileAnswer("lone_surrogate_and_nul_in_explanation",
                  answer(lambda ids: _with(_scores)(ids).replace("block 1", "cut \\ud83d here \\u0000 nul", 1)), None),
    HostileAnswer("long_explanation", answer(_with(lambda ids: _scores(ids, explanation="y" * 50_000))), None),
    HostileAnswer("integer_scores", answer(_with(lambda ids: _scores(ids, score=1))), None),
]

BODIES = [
    HostileAnswer("body_not_json", body("<html>502 bad gateway</html>"), "not_json: the response body is not JSON"),
    HostileAnswer("body_deep", body("[" * DEEP + "]" * DEEP), BODY_NESTS),
    HostileAnswer("body_deep_content", body(_completion("[" * DEEP + "]" * DEEP)), BODY_NESTS),
    HostileAnswer("body_long_int_usage", body(lambda ids: _completion(
        json.dumps(ok_content(ids)), f'{{"prompt_tokens": {LONG_INT}, "completion_tokens": 1}}')), DIGITS),
    HostileAnswer("body_top_level_list", body("[]"), "not_json: the response body is not a JSON object"),
    HostileAnswer("body_no_choices", body('{"choices": []}'), NO_TEXT),
    HostileAnswer("body_content_number", body(_completion("42")), NO_TEXT),
    HostileAnswer("body_content_object", body(lambda ids: _completion(ok_content(ids))), NO_TEXT),
    HostileAnswer("body_oversized", body(lambda ids: _completion(json.dumps(ok_content(ids)) + " " * BIG)),
                  "too_large"),
    HostileAnswer("error_body_oversized", Reply("status", code=400, text="x" * BIG), "too_large"),
    # odd but usable
    HostileAnswer("body_usage_nonsense", body(lambda ids: _completion(
        json.dumps(ok_content(ids)), '{"prompt_tokens": -5, "completion_tokens": "many"}')), None),
]

SLOW = [HostileAnswer("slow_drip", drip(1.0), "deadline: no answer within")]

CORPUS = ANSWERS + BODIES + SLOW
