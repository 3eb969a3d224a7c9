"""Trainer test data: a tiny base saved as the embedded profile stores it, and synthetic GRPO batches.

The synthetic task has one learnable pattern: in every group the agents that answered with the
BUY action earned more than those that answered HOLD, whatever the tick and market. Held-out
groups use other ticks, markets and prices, so a rising log-prob gap on them means the policy
learnt the pattern, not the prompts. Turns are built with the ART exporter's own functions
(`art.turns`), so they have exactly the shape `art_groups` writes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock
from safetensors.torch import load_file, save

from babylon_pipeline.art import to_jsonl
from babylon_pipeline.art.turns import assistant_choice, user_message
from babylon_pipeline.model.tiny import build_tiny_model
from babylon_pipeline.model.tokenizer import train_tokenizer
from babylon_pipeline.storage import ObjectStore, batch_key, model_key, open_object_store
from babylon_pipeline.store.records import LLMCall, TokenLogprob
from babylon_pipeline.training.request import STORE_BASE, TrainingRequest

SYSTEM = "You are a Babylon trader. Reply with exactly one action as JSON."
HOLD = '{"action": "HOLD", "parameters": {}}'
WINDOW = "2025-11-15T10:00"
QUESTIONS = ["Will it rain?", "Will BTC close up?", "Will the vote pass?", "Will ACME beat earnings?"]


def buy(market: str) -> str:
    return f'{{"action": "BUY_SHARES", "parameters": {{"marketId": "{market}", "side": "YES", "amount": 10}}}}'


def observation(tick: int, market: str, question: str, price: float) -> str:
    return f"Tick {tick}. Cash $1,000.00. Market [{market}] {question} YES {price:.2f}. What is your next action?"


def tokenizer_texts() -> list[str]:
    rng = random.Random(0)
    texts = [SYSTEM, HOLD]
    for tick in range(40):
        market = f"m{rng.randrange(100)}"
        texts += [observation(tick, market, rng.choice(QUESTIONS), rng.random()), buy(market)]
    return texts * 3


def save_tiny_base(folder: Path, size: str = "tiny") -> Path:
    """The embedded base as `base_model` writes it: safetensors weights, config and tokenizer files."""
    tokenizer = train_tokenizer(tokenizer_texts(), vocab_size=500)
    model = build_tiny_model(tokenizer, size=size, seed=0)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def upload_base(store: ObjectStore, folder: Path, poison: bool = False) -> None:
    """Every file of `folder` under models/base/; `poison` puts a NaN into the final norm's weights."""
    for path in sorted(folder.iterdir()):
        if path.name == "model.safetensors" and poison:
            tensors = load_file(path)
            name = next(n for n in tensors if n.endswith("norm.weight"))
            tensors[name][0] = float("nan")
            store.put_bytes(model_key("base", path.name), save(tensors, metadata={"format": "pt"}))
        else:
            store.put_file(model_key("base", path.name), path)


def trajectory(tid: str, user: str, response: str, reward: float, *, window: str = WINDOW,
               tokens: list[tuple[int, float]] | None = None, temperature: float | None = 1.0) -> dict:
    call = LLMCall(
        model="babylon-agent", systemPrompt=SYSTEM, userPrompt=user, response=response, temperature=temperature,
        logprobs=None if tokens is None else [
            TokenLogprob(token="x", logprob=lp, tokenId=token_id) for token_id, lp in tokens
        ],
    )
    return {
        "messages_and_choices": [{"role": "system", "content": SYSTEM}, user_message(call), assistant_choice(call)],
        "tools": None, "additional_histories": [], "reward": reward, "initial_policy_version": None,
        "final_policy_version": None, "metrics": {},
        "metadata": {"window_id": window, "trajectory_id": tid, "temperature": temperature, "top_p": None},
        "logs": [],
    }


def synthetic_groups(count: int, seed: int, size: int = 4, window: str = WINDOW) -> list[dict]:
    """`count` groups of `size`: half BUY (reward ~1), half HOLD (reward ~0), one market per group."""
    rng = random.Random(seed)
    groups = []
    for g in range(count):
        market, tick = f"m{rng.randrange(100)}", rng.randrange(60)
        members = []
        for i in range(size):
            user = observation(tick, market, rng.choice(QUESTIONS), rng.random())
            good = i % 2 == 0
            reward = (1.0 if good else 0.0) + rng.uniform(-0.1, 0.1)
            members.append(trajectory(f"s{seed}-g{g}-t{i}", user, buy(market) if good else HOLD, reward,
                                      window=window))
        groups.append({"trajectories": members, "exceptions": [], "metadata": {"window_id": window,
                       "group_id": f"s{seed}-g{g}"}, "metrics": {}, "logs": []})
    return groups


def put_batch(store: ObjectStore, batch_id: str, groups: list[dict]) -> str:
    key = batch_key(batch_id, "groups.jsonl")
    store.put_bytes(key, to_jsonl(groups))
    return key


def request(store_root: Path, batch_id: str, version: str, key: str, parent: str | None = None,
            **settings) -> TrainingRequest:
    """A local request; W&B disabled unless the test asks (`wandb=`)."""
    wandb = settings.pop("wandb", {"mode": "disabled"})
    return TrainingRequest.from_extras({
        "batch_id": batch_id, "version": version, "storage_url": store_root.as_uri(), "batch_key": key,
        "base_model": STORE_BASE, "parent_version": parent, "settings": settings, "wandb": wandb,
    })


def local_store(root: Path, base: Path, poison: bool = False) -> ObjectStore:
    store = open_object_store(root.as_uri())
    upload_base(store, base, poison=poison)
    return store


def read_metadata(store: ObjectStore, version: str) -> dict:
    return json.loads(store.get_bytes(model_key(version, "metadata.json")))


def shared_tiny_base(tmp_path_factory) -> Path:
    return shared_build(tmp_path_factory, "tiny-base", save_tiny_base)


def shared_build(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    """`build(folder)` once per test session, shared by the xdist workers (each waits on the lock for the first)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    root = tmp_path_factory.getbasetemp().parent if worker else tmp_path_factory.getbasetemp()
    folder = root / name
    with FileLock(str(root / f"{name}.lock")):
        if not folder.is_dir():
            staging = root / f"{name}.partial"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            build(staging)
            staging.rename(folder)
    return folder
