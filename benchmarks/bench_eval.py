"""Evaluation wall time against the same policies' bare generation of the same number of tokens (goal <= 1.25).

On a scratch copy of a stored base (`models/base/` of --storage-url, default the embedded store: materialize
`base_model` first), a candidate v1.0.0 (a fresh LoRA whose B weights are drawn small, so it answers a little
differently from the base) is evaluated against the base with the given suite size, every policy call recorded
(prompts and completion lengths). Then, in the same process, each policy's model generates for every recorded
prompt exactly as many tokens as it answered there (`min_new_tokens` = `max_new_tokens` = that count), one call
at a time as the simulator asks, sampling at the suite's temperature, nothing else timed. The ratio is the
evaluation's wall time (model loading, simulation, recording, reading back, scoring, bootstrap) over that.
Evaluation and generation alternate for `--rounds` rounds (the same calls every round: everything is seeded)
and the fastest of each counts, so a burst of other load on shared cores skews neither side.

    python benchmarks/bench_eval.py [--storage-url file:///...] [--scenarios 16 --agents 2 --ticks 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

from babylon_pipeline.evaluation import comparison_table
from babylon_pipeline.evaluation.policies import LocalPolicies
from babylon_pipeline.evaluation.run import run_evaluation
from babylon_pipeline.evaluation.suite import ensure_suite
from babylon_pipeline.evaluation.version import EvaluationSettings
from babylon_pipeline.model.base_record import read_base_record
from babylon_pipeline.model.sampling import prompt_ids
from babylon_pipeline.resources.object_store import embedded_storage_url
from babylon_pipeline.storage import LocalObjectStore, model_key, open_object_store
from babylon_pipeline.storage.keys import model_prefix

GOAL = 1.25


class Recorded:
    """A policy that notes every request and the length of its answer, then answers as the wrapped one."""

    def __init__(self, policy, calls: list) -> None:
        self.policy, self.calls = policy, calls

    def act(self, system_prompt, user_prompt, observation):
        response = self.policy.act(system_prompt, user_prompt, observation)
        self.calls.append((system_prompt, user_prompt, response.completion_tokens))
        return response


class RecordingSource:
    def __init__(self, source: LocalPolicies) -> None:
        self.source, self.policies, self.calls = source, {}, {}

    def policy(self, version):
        self.policies[version] = self.source.policy(version)
        return Recorded(self.policies[version], self.calls.setdefault(version, []))

    def reseed(self, seed: int) -> None:
        self.source.reseed(seed)


def scratch_store(source_url: str, folder: Path) -> LocalObjectStore:
    """The stored base copied, and a candidate adapter beside it: the user's store is only read."""
    source, store = open_object_store(source_url), LocalObjectStore(folder / "objects")
    for key in source.list_keys(model_prefix("base")):
        store.put_bytes(key, source.get_bytes(key))
    base = read_base_record(store)
    from babylon_pipeline.training.base_model import load_base
    from babylon_pipeline.training.device import pick_runtime

    model, _ = load_base(base.spec, store, folder / "base", pick_runtime())
    torch.manual_seed(0)
    config = LoraConfig(r=8, target_modules="all-linear", task_type="CAUSAL_LM", init_lora_weights=False)
    adapter = get_peft_model(model, config)
    with torch.no_grad():
        for name, weights in adapter.named_parameters():
            if "lora_B" in name:
                weights.mul_(0.02)
    adapter.save_pretrained(str(folder / "v1.0.0"), safe_serialization=True)
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        store.put_file(model_key("v1.0.0", name), folder / "v1.0.0" / name)
    store.put_json(model_key("v1.0.0", "metadata.json"), {"version": "v1.0.0"})
    return store


@torch.no_grad()
def bare_generation(policy, calls, temperature: float, seed: int) -> tuple[float, int]:
    """Seconds of `generate` alone for the recorded prompts and answer lengths, and the tokens generated."""
    room = policy.context_tokens - policy.max_new_tokens
    torch.manual_seed(seed)
    seconds, tokens = 0.0, 0
    for system, user, count in calls:
        if not count:
            continue
        ids = torch.tensor([prompt_ids(policy.tokenizer, system, user, room)])
        began = time.perf_counter()
        out = policy.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                    temperature=temperature, top_k=0, top_p=1.0, min_new_tokens=count,
                                    max_new_tokens=count, pad_token_id=policy.tokenizer.pad_token_id)
        seconds += time.perf_counter() - began
        tokens += out.shape[1] - ids.shape[1]
    return seconds, tokens


def main() -> None:
    defaults = EvaluationSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage-url", default=os.environ.get("BABYLON_STORAGE_URL") or embedded_storage_url())
    parser.add_argument("--scenarios", type=int, default=defaults.scenarios)
    parser.add_argument("--agents", type=int, default=defaults.agents)
    parser.add_argument("--ticks", type=int, default=defaults.ticks)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    settings = EvaluationSettings(suite="bench", scenarios=args.scenarios, agents=args.agents, ticks=args.ticks)
    definition = settings.definition()
    with tempfile.TemporaryDirectory(prefix="babylon-bench-eval-") as scratch:
        folder = Path(scratch)
        store = scratch_store(args.storage_url, folder)
        base = read_base_record(store)
        walls, generations = [], []
        for _ in range(args.rounds):
            source = RecordingSource(LocalPolicies(store, base, folder / "work", temperature=definition.temperature,
                                                   max_new_tokens=definition.max_new_tokens))
            began = time.perf_counter()
            evaluation = run_evaluation(definition, ensure_suite(store, definition), source, "v1.0.0", None,
                                        work_dir=folder, bootstrap=settings.bootstrap(), margins=settings.margins())
            walls.append(time.perf_counter() - began)
            measured = [bare_generation(source.policies[v], calls, definition.temperature, definition.first_seed)
                        for v, calls in source.calls.items()]
            generations.append((sum(s for s, _ in measured), sum(t for _, t in measured)))
    wall = min(walls)
    seconds, tokens = min(generations)
    print(comparison_table(evaluation))
    print(f"base {base.name} ({base.parameters:,} parameters), torch threads {torch.get_num_threads()}; suite "
          f"{definition.scenarios} scenarios x {definition.agents} agents x {definition.ticks} ticks, "
          f"{len(source.calls)} distinct policies, {sum(len(c) for c in source.calls.values())} calls")
    print(f"verdict {evaluation.verdict} [{evaluation.interval.low:+.4f}, {evaluation.interval.high:+.4f}]")
    print(f"rounds: evaluation {', '.join(f'{w:.2f}' for w in walls)} s; generation "
          f"{', '.join(f'{g:.2f}' for g, _ in generations)} s")
    print(f"evaluation wall time {wall:.2f} s; bare generation of the same {tokens} tokens {seconds:.2f} s "
          f"({tokens / seconds:.0f} tokens/s)")
    ratio = wall / seconds
    print(f"ratio {ratio:.3f} (goal <= {GOAL}): {'met' if ratio <= GOAL else 'NOT met'}")


if __name__ == "__main__":
    main()
