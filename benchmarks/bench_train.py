"""Cost of one GRPO step against a plain supervised step on the same batch, model and run.

For each model size, in a fresh process (so peak RSS is that size's own), a LoRA (r=8, all linear
layers) on the locally built Qwen2-style base, one batch of `--seqs` sequences of `--prompt` +
`--completion` random tokens with random advantages, and three kinds of optimizer step on it,
interleaved round by round after `--warmup` rounds that are not timed:

  - plain: forward + cross-entropy on the completion tokens + backward + clip + AdamW (an SFT step);
  - grpo:  the trainer's own `train_step` (completion log-probs, clipped ratio, DAPO), beta = 0;
  - grpo+kl: the same with beta = 0.04 (one more forward pass, adapter disabled, for the reference).

Prints the median seconds per step, tokens/s, the ratio to the plain step (goal <= 1.3 without KL)
and peak RSS (VmHWM).

    python benchmarks/bench_train.py [--sizes tiny small] [--shapes 96+32 384+128] [--seqs 8] [--rounds 8]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from functools import partial

import torch

from babylon_pipeline.model.tiny import build_tiny_model, parameter_count
from babylon_pipeline.model.tokenizer import train_tokenizer
from babylon_pipeline.sim.prompts import ACTION_FORMAT
from babylon_pipeline.training.adapter import fresh_lora, trainable_parameters
from babylon_pipeline.training.collate import Batch, collate
from babylon_pipeline.training.device import Runtime, pick_runtime
from babylon_pipeline.training.request import GRPOSettings
from babylon_pipeline.training.samples import Sample
from babylon_pipeline.training.trainer import train_step

SHAPES = ["96+32", "384+128"]


def peak_rss_mb() -> float:
    """VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork+exec."""
    with open("/proc/self/status") as handle:
        status = dict(line.split(":", 1) for line in handle)
    return int(status["VmHWM"].split()[0]) / 1024


def child(size: str, shapes: list[str], seqs: int, rounds: int, warmup: int) -> None:
    """Runs in its own process: every shape for one size, one JSON line per shape."""
    torch.manual_seed(0)
    runtime = pick_runtime()
    tokenizer = train_tokenizer([ACTION_FORMAT] * 50, vocab_size=1024)
    settings = GRPOSettings(learning_rate=1e-4, max_seq_len=4096)
    model = fresh_lora(build_tiny_model(tokenizer, size=size, seed=0), settings).to(runtime.device)
    model.train()
    params = trainable_parameters(model)
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
    with_kl = replace(settings, beta=0.04)
    rng = random.Random(0)
    vocab = len(tokenizer)

    for shape in shapes:
        prompt_len, completion_len = map(int, shape.split("+"))
        samples = [
            Sample(tuple(rng.randrange(vocab) for _ in range(prompt_len)),
                   tuple(rng.randrange(vocab) for _ in range(completion_len)),
                   (math.nan,) * completion_len, rng.choice((-1.0, 1.0)) * rng.random(), str(i), False)
            for i in range(seqs)
        ]
        batch = collate(samples, tokenizer.pad_token_id, runtime.device)
        steps = {
            "plain": partial(plain_step, model, optimizer, params, batch, settings, runtime),
            "grpo": partial(train_step, model, optimizer, params, samples, tokenizer.pad_token_id, settings, runtime,
                            1, 1),
            "grpo+kl": partial(train_step, model, optimizer, params, samples, tokenizer.pad_token_id, with_kl,
                               runtime, 1, 1),
        }
        times = time_interleaved(steps, rounds, warmup, runtime)
        print(json.dumps({
            "size": size, "shape": shape, "params": parameter_count(model), "trainable": sum(p.numel() for p in params),
            "tokens": batch.tokens, "device": runtime.device.type,
            "seconds": times,
            "peak_rss_mb": peak_rss_mb(),
        }), flush=True)


def plain_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, params: list, batch: Batch,
               settings: GRPOSettings, runtime: Runtime) -> None:
    """Supervised step on the completion tokens: the model's own cross-entropy over full-sequence logits."""
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    labels[:, : batch.prompt_ids.size(1)] = -100
    with runtime.autocast():
        loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
    optimizer.step()


def time_interleaved(steps: dict, rounds: int, warmup: int, runtime: Runtime) -> dict[str, float]:
    """Median seconds per step of each kind; one step of each per round, so drift hits all kinds alike."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_number in range(warmup + rounds):
        for name, step in steps.items():
            began = time.perf_counter()
            step()
            if runtime.device.type == "cuda":
                torch.cuda.synchronize()
            if round_number >= warmup:
                times[name].append(time.perf_counter() - began)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"])
    parser.add_argument("--shapes", nargs="+", default=SHAPES, help="prompt+completion tokens per sequence")
    parser.add_argument("--seqs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.shapes, args.seqs, args.rounds, args.warmup)
        return

    print(f"{args.seqs} sequences per step, median of {args.rounds} steps after {args.warmup} warm-up rounds")
    print(f"{'size':<6} {'params':>7} {'shape':>8} {'tokens':>6} {'plain s':>8} {'grpo s':>7} {'ratio':>6} "
          f"{'grpo+kl s':>9} {'ratio':>6} {'grpo tok/s':>10} {'peak RSS MB':>11}")
    for size in args.sizes:
        command = [sys.executable, __file__, "--child", size, "--shapes", *args.shapes, "--seqs", str(args.seqs),
                   "--rounds", str(args.rounds), "--warmup", str(args.warmup)]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        for line in out.splitlines():
            row = json.loads(line)
            s = row["seconds"]
            print(f"{row['size']:<6} {row['params'] / 1e6:>6.1f}M {row['shape']:>8} {row['tokens']:>6} "
                  f"{s['plain']:>8.3f} {s['grpo']:>7.3f} {s['grpo'] / s['plain']:>6.2f} {s['grpo+kl']:>9.3f} "
                  f"{s['grpo+kl'] / s['plain']:>6.2f} {row['tokens'] / s['grpo']:>10,.0f} {row['peak_rss_mb']:>11.0f}")
    print("ratio = step time / plain forward+backward+AdamW step on the same batch (goal <= 1.3 without KL); "
          "peak RSS is the whole process's (model, optimizer, all shapes up to that row)")


if __name__ == "__main__":
    main()
