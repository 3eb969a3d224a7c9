"""RULER judging throughput against a loopback OpenAI-compatible judge with a fixed latency per call.

Judges N groups (default 200 groups of 6 trajectories, ~4 KB of messages each beyond a shared
~2.5 KB context) through `CachedJudge(OpenAIJudge)` and the real `openai` client, the server
answering each call after `--latency-ms` (default 200 ms), `--concurrency` groups at once (default 8).
Prints the wall time and its ratio to the ideal `groups x latency / concurrency` (goal <= 1.3), then
judges the same groups again through the cache (a local directory) and prints the calls that run
made (must be 0) and its time. Exits non-zero if the second run called the judge.

    python benchmarks/bench_judge.py [--groups 200] [--latency-ms 200] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.judge_server

from babylon_pipeline.ruler import (
    BABYLON_TRADING,
    CachedJudge,
    GroupJudgment,
    JudgeGroup,
    JudgeTrajectory,
    JudgmentCache,
    OpenAIJudge,
    summarize,
)
from tests.judge_server import JudgeServer

WORDS = ["market", "price", "yes", "no", "position", "balance", "trend", "signal", "whale", "rumor", "volume", "perp", "odds"]
ACTIONS = ["BUY_SHARES YES", "BUY_SHARES NO", "SELL_SHARES", "OPEN_PERP long", "OPEN_PERP short", "CREATE_POST", "HOLD"]


class DirStore:
    """The cache's byte store on a local directory; writes are atomic (temp file, then rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def get_bytes(self, key: str) -> bytes | None:
        path = self.root / key
        return path.read_bytes() if path.exists() else None

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)


def _text(rng: random.Random, size: int) -> str:
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < size:
        words.append(rng.choice(WORDS))
    return " ".join(words)


def make_groups(n_groups: int, n_trajectories: int, seed: int = 7) -> list[JudgeGroup]:
    rng = random.Random(seed)
    groups = []
    for g in range(n_groups):
        context = [
            {"role": "system", "content": "You are a Babylon trading agent. " + _text(rng, 1500)},
            {"role": "user", "content": f"Scenario {g}. Feed: " + _text(rng, 1000)},
        ]
        trajectories = []
        for t in range(n_trajectories):
            messages = list(context)
            for step in range(4):
                action = f"{rng.choice(ACTIONS)} {rng.randint(1, 50)}. "
                messages.append({"role": "assistant", "content": action + _text(rng, 200)})
                messages.append({"role": "user", "content": f"Step {step + 1} observation: " + _text(rng, 800)})
            metrics = {"window_pnl": round(rng.uniform(-80, 80), 2), "prediction_accuracy": rng.choice([0.0, 0.5, 1.0])}
            trajectories.append(JudgeTrajectory(trajectory_id=f"w{g:04d}-a{t}", messages=messages, metrics=metrics))
        groups.append(JudgeGroup(group_id=f"scenario-{g:04d}", trajectories=trajectories))
    return groups


def run(judge: CachedJudge, groups: list[JudgeGroup]) -> tuple[float, list[GroupJudgment]]:
    started = time.perf_counter()
    judgments = judge.judge_groups(groups, BABYLON_TRADING)
    return time.perf_counter() - started, judgments


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument("--trajectories", type=int, default=6)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    groups = make_groups(args.groups, args.trajectories)
    server = JudgeServer(latency_s=args.latency_ms / 1000).start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-judge-") as cache_dir:
            def judge() -> CachedJudge:
                inner = OpenAIJudge(server.base_url, "bench-judge", "bench-key", concurrency=args.concurrency, timeout_s=30)
                return CachedJudge(inner, JudgmentCache(DirStore(Path(cache_dir))))

            first_s, first = run(judge(), groups)
            first_calls = server.count
            second_s, second = run(judge(), groups)
            second_calls = server.count - first_calls
    finally:
        server.stop()

    ideal_s = args.groups * args.latency_ms / 1000 / args.concurrency
    ratio = first_s / ideal_s
    totals = summarize(first)
    prompt_kb = sum(len(m["content"]) for m in server.requests[0].body["messages"]) / 1024
    print(f"groups {args.groups} x {args.trajectories} trajectories, judge prompt ~{prompt_kb:.0f} KB per group, "
          f"latency {args.latency_ms:.0f} ms per call, concurrency {args.concurrency}")
    print(f"first run : {first_s:6.2f} s wall, {first_calls} calls, max in flight {server.max_in_flight}, "
          f"{totals.scored} scored, {totals.judge_failed} judge_failed, {totals.prompt_tokens} prompt tokens")
    print(f"ideal     : {ideal_s:6.2f} s (groups x latency / concurrency)")
    print(f"ratio     : {ratio:6.3f}  (goal <= 1.3: {'met' if ratio <= 1.3 else 'MISSED'})")
    print(f"second run: {second_s:6.2f} s wall, {second_calls} calls, {summarize(second).cached} cached "
          f"({'ok' if second_calls == 0 else 'FAILED: expected 0 calls'})")
    return 0 if second_calls == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
