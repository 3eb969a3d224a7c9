"""From ART groups to training samples: context, tokens, behaviour log-probs, advantages, truncation."""

from __future__ import annotations

import hashlib
import math
import statistics
from dataclasses import replace

import pytest

from babylon_pipeline.art.turns import assistant_choice
from babylon_pipeline.model.base_record import BaseRecord
from babylon_pipeline.model.prompt_room import ANSWER_TOKENS, keep_end, prompt_room
from babylon_pipeline.model.tokenizer import train_tokenizer
from babylon_pipeline.storage import open_object_store
from babylon_pipeline.store.records import LLMCall, TokenLogprob
from babylon_pipeline.training.advantages import group_advantages
from babylon_pipeline.training.batch import BatchFormatError, read_batch
from babylon_pipeline.training.request import STORE_BASE, GRPOSettings
from babylon_pipeline.training.samples import ChatEncoder, build_samples
from tests.training_data import HOLD, SYSTEM, buy, tokenizer_texts, trajectory


@pytest.fixture(scope="module")
def encoder() -> ChatEncoder:
    return ChatEncoder(train_tokenizer(tokenizer_texts(), vocab_size=500))


def _group(*trajectories: dict) -> dict:
    return {"trajectories": list(trajectories), "metadata": {"window_id": "2025-11-15T10:00"}}


def _decode(encoder: ChatEncoder, ids) -> str:
    return encoder.tokenizer.decode(list(ids))


def _recorded(encoder: ChatEncoder, text: str, logprob: float) -> list[tuple[int, float]]:
    return [(token_id, logprob) for token_id in encoder.tokenizer.encode(text)]


def test_each_turn_is_trained_in_the_system_prompt_and_the_observation_just_before_it(encoder):
    first = trajectory("t1", "tick one", HOLD, 1.0)
    second_call = LLMCall(model="m", systemPrompt=SYSTEM, userPrompt="tick two", response=buy("m7"))
    first["messages_and_choices"] += [
        {"role": "assistant", "content": "an untrained aside"},
        {"role": "user", "content": "tick two"},
        assistant_choice(second_call),
    ]
    samples, counts = build_samples([_group(first, trajectory("t2", "tick one", HOLD, 0.0))], encoder,
                                    GRPOSettings())
    assert counts.samples == 3 and counts.trajectories == 2 and counts.groups == 1
    prompt = _decode(encoder, samples[1].prompt_ids)
    assert prompt == f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\ntick two<|im_end|>\n<|im_start|>assistant\n"
    assert _decode(encoder, samples[1].completion_ids) == buy("m7") + "<|im_end|>"
    assert samples[0].advantage == samples[1].advantage > 0 > samples[2].advantage  # a trajectory's turns share it


def test_rendered_turns_are_the_template_with_its_assistant_mask(encoder):
    samples, _ = build_samples([_group(trajectory("t", "obs", buy("m1"), 0.0))], encoder, GRPOSettings())
    chat = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "obs"},
            {"role": "assistant", "content": buy("m1")}]
    full = encoder.tokenizer.apply_chat_template(chat, return_dict=True)["input_ids"]
    sample = samples[0]
    assert list(sample.prompt_ids + sample.completion_ids) == full[: len(sample.prompt_ids + sample.completion_ids)]
    assert sample.completion_ids[-1] == encoder.end_id
    assert all(math.isnan(v) for v in sample.behaviour_logprobs)  # nothing recorded: ratio 1


def test_recorded_token_ids_are_trained_as_sampled_with_the_end_marker_appended(encoder):
    tokens = _recorded(encoder, HOLD, -0.5)
    with_end = tokens + [(encoder.end_id, -0.1)]
    groups = [_group(trajectory("a", "obs", HOLD, 1.0, tokens=tokens),
                     trajectory("b", "obs", HOLD, 0.0, tokens=with_end))]
    (appended, kept), counts = build_samples(groups, encoder, GRPOSettings())
    assert list(appended.completion_ids) == [t for t, _ in tokens] + [encoder.end_id]
    assert appended.behaviour_logprobs[:-1] == (-0.5,) * len(tokens) and math.isnan(appended.behaviour_logprobs[-1])
    assert list(kept.completion_ids) == [t for t, _ in with_end] and kept.behaviour_logprobs[-1] == -0.1
    assert list(appended.prompt_ids) == encoder.encode_prompt([{"role": "system", "content": SYSTEM},
                                                               {"role": "user", "content": "obs"}])
    assert counts.turns_with_recorded_ids == counts.turns_with_behaviour_logprobs == 2


@pytest.mark.parametrize(("temperature", "top_p", "settings", "usable"), [
    (1.0, None, {}, True),
    (0.7, None, {}, False),
    (1.0, 0.9, {}, False),
    (None, None, {}, False),
    (None, None, {"trust_logprobs_without_temperature": True}, True),
    (1.0, None, {"use_behaviour_logprobs": False}, False),
])
def test_recorded_logprobs_are_behaviour_logprobs_only_for_temperature_one_sampling(
    encoder, temperature, top_p, settings, usable
):
    member = trajectory("a", "obs", HOLD, 1.0, tokens=_recorded(encoder, HOLD, -0.5), temperature=temperature)
    member["metadata"]["top_p"] = top_p
    samples, counts = build_samples([_group(member)], encoder, GRPOSettings(**settings))
    assert (not math.isnan(samples[0].behaviour_logprobs[0])) is usable
    assert counts.turns_with_behaviour_logprobs == usable and counts.turns_with_recorded_ids == 1


def test_token_ids_outside_the_vocabulary_are_a_batch_error(encoder):
    member = trajectory("a", "obs", HOLD, 1.0, tokens=[(10**6, -0.5)])
    with pytest.raises(BatchFormatError, match="outside this tokenizer's vocabulary"):
        build_samples([_group(member)], encoder, GRPOSettings())


def test_too_long_prompts_lose_their_start_and_keep_the_completion(encoder):
    member = trajectory("a", "word " * 200, HOLD, 1.0)
    (full,), _ = build_samples([_group(member)], encoder, GRPOSettings(max_seq_len=4096))
    (cut,), counts = build_samples([_group(member)], encoder, GRPOSettings(max_seq_len=64))
    assert cut.completion_ids == full.completion_ids and cut.completion_tokens_cut == 0
    assert len(cut.prompt_ids) + len(cut.completion_ids) == 64
    assert cut.prompt_ids == full.prompt_ids[-len(cut.prompt_ids):]
    assert cut.prompt_tokens_dropped == len(full.prompt_ids) - len(cut.prompt_ids) > 0
    assert (counts.prompts_trimmed, counts.prompt_tokens_dropped) == (1, cut.prompt_tokens_dropped)
    assert (counts.completions_cut, counts.completion_tokens_cut) == (0, 0)  # old context lost, the answer whole
    (tiny,), tiny_counts = build_samples([_group(member)], encoder, GRPOSettings(max_seq_len=4))
    assert len(tiny.prompt_ids) == 1 and tiny.completion_ids == full.completion_ids[:3]
    assert tiny.completion_tokens_cut == len(full.completion_ids) - 3 and tiny.prompt_tokens_dropped == len(full.prompt_ids) - 1
    assert (tiny_counts.completions_cut, tiny_counts.completion_tokens_cut) == (1, tiny.completion_tokens_cut)
    assert (full.prompt_tokens_dropped, full.completion_tokens_cut) == (0, 0)
    (exact,), _ = build_samples([_group(member)], encoder, GRPOSettings(max_seq_len=len(full.prompt_ids) + len(full.completion_ids)))
    assert (exact.prompt_tokens_dropped, exact.completion_tokens_cut) == (0, 0)  # fits exactly: nothing cut


def test_prompts_keep_the_policys_room_and_an_appended_end_marker_never_costs_a_prompt_token(encoder):
    rendered = trajectory("r", "word " * 200, HOLD, 1.0)
    tokens = _recorded(encoder, HOLD, -0.5)  # no end marker recorded: an answer cut at its budget
    recorded = trajectory("s", "word " * 200, HOLD, 0.0, tokens=tokens)
    (full, _), _ = build_samples([_group(rendered, recorded)], encoder, GRPOSettings(max_seq_len=4096))

    (room, fits), counts = build_samples([_group(rendered, recorded)], encoder,
                                         GRPOSettings(max_seq_len=4096, max_prompt_tokens=20))
    assert room.prompt_ids == fits.prompt_ids == full.prompt_ids[-20:]  # the end the policy fed its model
    assert room.completion_ids == full.completion_ids and fits.completion_ids[-1] == encoder.end_id
    assert (counts.prompts_trimmed, counts.prompt_tokens_dropped) == (2, 2 * (len(full.prompt_ids) - 20))

    (_, full_up), counts = build_samples([_group(rendered, recorded)], encoder,
                                         GRPOSettings(max_seq_len=20 + len(tokens), max_prompt_tokens=20))
    assert full_up.prompt_ids == full.prompt_ids[-20:] and list(full_up.completion_ids) == [t for t, _ in tokens]
    assert full_up.behaviour_logprobs == (-0.5,) * len(tokens) and full_up.completion_tokens_cut == 0
    assert (counts.completions_cut, counts.completion_tokens_cut) == (0, 0)  # the answer as sampled, whole

    (_, short), _ = build_samples([_group(rendered, recorded)], encoder,
                                  GRPOSettings(max_seq_len=10 + len(tokens), max_prompt_tokens=20))
    assert short.prompt_ids == full.prompt_ids[-10:] and len(short.completion_ids) == len(tokens)
    assert short.prompt_tokens_dropped == len(full.prompt_ids) - 10  # max_seq_len cuts further into the room


def test_the_trainer_keeps_the_local_policys_room_on_an_embedded_base_and_no_room_on_a_hub_base():
    embedded = BaseRecord(name="b", spec=STORE_BASE, source="embedded", parameters=1, context_tokens=256)
    assert embedded.trained_prompt_room() == prompt_room(256, ANSWER_TOKENS) == 256 - 96
    assert replace(embedded, source="hub", context_tokens=2048).trained_prompt_room() is None
    with pytest.raises(ValueError, match="must leave room for the prompt"):
        prompt_room(96)
    assert keep_end([1, 2, 3], 2) == [2, 3] and keep_end([1, 2, 3], 5) == keep_end([1, 2, 3], None) == [1, 2, 3]


def test_advantages_are_normalised_within_each_group_like_trl():
    rewards = [1.0, 0.0, 0.25, 0.5, 0.9]
    mean, std = statistics.fmean(rewards), statistics.stdev(rewards)  # Bessel, as TRL's nanstd
    assert group_advantages(rewards) == pytest.approx([(r - mean) / (std + 1e-4) for r in rewards])
    assert group_advantages([3.0]) == [0.0]
    assert group_advantages([2.0, 2.0]) == [0.0, 0.0]


def test_groups_of_different_sizes_are_normalised_separately(encoder):
    small = _group(trajectory("a", "o", HOLD, 1.0), trajectory("b", "o", HOLD, 0.0))
    large = _group(*(trajectory(f"c{i}", "o", HOLD, 10.0 * i) for i in range(5)))
    samples, _ = build_samples([small, large], encoder, GRPOSettings())
    assert [s.advantage for s in samples] == pytest.approx(group_advantages([1.0, 0.0])
                                                           + group_advantages([0.0, 10.0, 20.0, 30.0, 40.0]))


@pytest.mark.parametrize(("content", "message"), [
    (None, "no training batch at"),
    (b"", "holds no groups"),
    (b"{not json\n", "line 1: not JSON"),
    (b'{"groups": []}\n', "no 'trajectories' list"),
    (b'{"trajectories": [{"messages_and_choices": [], "reward": NaN}]}\n', "reward must be a finite number"),
])
def test_malformed_batches_are_clear_errors(tmp_path, content, message):
    store = open_object_store(tmp_path.as_uri())
    if content is not None:
        store.put_bytes("training-batches/b/groups.jsonl", content)
    with pytest.raises(BatchFormatError, match=message):
        read_batch(store, "training-batches/b/groups.jsonl")


def test_batch_hash_and_windows_come_from_the_stored_bytes(tmp_path):
    store = open_object_store(tmp_path.as_uri())
    data = b'{"trajectories": [{"messages_and_choices": [], "reward": 1, "metadata": {"window_id": "w2"}}],' \
           b' "metadata": {"window_id": "w1"}}\n'
    store.put_bytes("training-batches/b/groups.jsonl", data)
    batch = read_batch(store, "training-batches/b/groups.jsonl")
    assert batch.data_hash == hashlib.sha256(data).hexdigest() and batch.windows == ("w1", "w2")


def test_the_exporter_writes_token_ids_the_trainer_reads():
    call = LLMCall(model="m", systemPrompt="s", userPrompt="u", response="ab", temperature=1.0,
                   logprobs=[TokenLogprob(token="a", logprob=-0.1, tokenId=5), TokenLogprob(token="b", logprob=-0.2,
                                                                                          tokenId=6)])
    tokens = assistant_choice(call)["logprobs"]["content"]
    assert [t["token"] for t in tokens] == ["token_id:5", "token_id:6"]
