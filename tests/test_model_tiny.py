"""The locally built tokenizer and tiny Qwen2 base: what every training test stands on."""

import pytest

from babylon_pipeline.model.chat_template import CHAT_TEMPLATE, has_generation_markers
from babylon_pipeline.model.tiny import build_tiny_model, parameter_count
from babylon_pipeline.model.tokenizer import train_tokenizer

TEXTS = ['I think YES is cheap. {"action": "BUY_SHARES", "parameters": {"marketId": "m1", "side": "YES"}}'] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=400)


def test_every_string_round_trips_through_the_byte_level_tokenizer(tokenizer):
    text = "Ünïcødé — 🚀 {\"amount\": 12.5}\n\ttabs"
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_assistant_mask_covers_exactly_the_response_and_its_end_marker(tokenizer):
    chat = [{"role": "system", "content": "rules"}, {"role": "user", "content": "tick"},
            {"role": "assistant", "content": "HOLD"}, {"role": "user", "content": "next"},
            {"role": "assistant", "content": "BUY"}]
    out = tokenizer.apply_chat_template(chat, return_assistant_tokens_mask=True, return_dict=True)
    masked = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(masked) == "HOLD<|im_end|>BUY<|im_end|>"
    prompt = tokenizer.apply_chat_template(chat[:2], add_generation_prompt=True, return_dict=True)["input_ids"]
    assert out["input_ids"][: len(prompt)] == prompt


def test_template_check_tells_training_templates_from_hub_ones():
    assert has_generation_markers(CHAT_TEMPLATE)
    assert not has_generation_markers("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert not has_generation_markers(None)


def test_tiny_model_is_a_few_million_parameters_and_deterministic(tokenizer):
    a, b = build_tiny_model(tokenizer, seed=3), build_tiny_model(tokenizer, seed=3)
    assert 1_000_000 < parameter_count(a) < 6_000_000
    assert a.config.model_type == "qwen2"
    assert all((p == q).all() for p, q in zip(a.parameters(), b.parameters(), strict=True))
    with pytest.raises(ValueError, match="unknown model size"):
        build_tiny_model(tokenizer, size="huge")


def test_the_stored_tokenizer_is_the_trained_one(tmp_path):
    """AutoTokenizer would load a qwen2 folder as Qwen2Tokenizer, digits split: not what the base learnt on."""
    from babylon_pipeline.training.base_model import load_pretrained
    from babylon_pipeline.training.device import pick_runtime

    tokenizer = train_tokenizer([f"[2480242950{n:08d}] YES 0.{n % 1000:03d}, ${n:,}.24" for n in range(300)], 400)
    build_tiny_model(tokenizer).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    _, loaded = load_pretrained(str(tmp_path), pick_runtime(), embedded=True)
    chat = [{"role": "system", "content": "rules"}, {"role": "user", "content": "[248024295017406691] YES 0.241, $4,732.24"}]
    assert loaded.apply_chat_template(chat, add_generation_prompt=True) == tokenizer.apply_chat_template(
        chat, add_generation_prompt=True)
    assert loaded.encode("248024295017406691") == tokenizer.encode("248024295017406691")
