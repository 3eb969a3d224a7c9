"""`base_model`, materialized: the embedded tiny base built, warm-started and checked on held-out
observations; a production base recorded from its config and tokenizer alone."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import dagster as dg
import pytest

from babylon_pipeline.model.base_record import read_base_record
from babylon_pipeline.model.tiny import build_tiny_model, tiny_config
from babylon_pipeline.model.tokenizer import train_tokenizer
from babylon_pipeline.storage import open_object_store
from tests.embedded_base import embedded_base_objects, materialize_base
from tests.training_data import tokenizer_texts


def _figures(result: dg.ExecuteInProcessResult) -> tuple[dict, dg.AssetCheckEvaluation]:
    [event] = result.asset_materializations_for_node("base_model")
    [check] = result.get_asset_check_evaluations()
    return {k: v.value for k, v in event.metadata.items()}, check


@pytest.fixture(autouse=True)
def _no_production_base(monkeypatch):
    monkeypatch.delenv("BASE_MODEL", raising=False)


def test_the_embedded_base_writes_valid_actions_and_is_stored_as_safetensors(tmp_path_factory) -> None:
    objects = embedded_base_objects(tmp_path_factory)
    store = open_object_store(objects.as_uri())
    record = read_base_record(store)
    assert record.source == "embedded" and record.spec == "store:base" and record.name.startswith("babylon-tiny-")
    assert 1_000_000 < record.parameters < 10_000_000
    assert record.details["valid_action_share"] >= 0.9, record.details  # at the policy's temperature, held-out seed
    assert 0.0 <= record.details["grounded_action_share"] <= record.details["valid_action_share"]
    assert record.details["sft_loss"] < record.details["sft_first_loss"]
    names = {key.rsplit("/", 1)[1] for key in store.list_keys("models/base")}
    assert {"model.safetensors", "config.json", "tokenizer.json", "metadata.json"} <= names
    assert not {n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl"))}

    again = materialize_base(objects.as_uri())  # the same settings: kept, not rebuilt
    figures, check = _figures(again)
    assert again.success and check.passed and figures["name"] == record.name
    assert figures["valid_action_share"] == record.details["valid_action_share"]


def test_a_base_that_cannot_act_fails_the_blocking_check(tmp_path) -> None:
    result = materialize_base((tmp_path / "objects").as_uri(), sim_hours=1, sim_agents=5, sft_steps=2, held_out=8)
    figures, check = _figures(result)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert figures["valid_action_share"] < 0.9 and figures["sft_steps"] == 2


def _hub_like_folder(folder: Path, template: str) -> Path:
    """What a hub snapshot holds but the weights: config and tokenizer files."""
    tokenizer = train_tokenizer(tokenizer_texts(), vocab_size=400)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(folder)
    tiny_config(tokenizer).save_pretrained(folder)
    return folder


def test_a_production_base_is_recorded_from_config_and_tokenizer_without_weights(tmp_path, monkeypatch) -> None:
    qwen25 = files("trl").joinpath("chat_templates/qwen2_5.jinja").read_text()
    folder = _hub_like_folder(tmp_path / "qwen-like", qwen25)
    monkeypatch.setenv("BASE_MODEL", str(folder))
    result = materialize_base((tmp_path / "objects").as_uri())
    figures, check = _figures(result)
    assert result.success and check.passed
    expected = sum(p.numel() for p in build_tiny_model(train_tokenizer(tokenizer_texts(), 400)).parameters())
    assert figures["parameters"] == expected and figures["source"] == "hub"
    assert figures["chat_template"] == "TRL training template" and figures["revision"] == "None"
    record = read_base_record(open_object_store((tmp_path / "objects").as_uri()))
    assert (record.name, record.spec, record.context_tokens) == (str(folder), str(folder), 2048)


def test_a_production_base_without_an_assistant_mask_template_is_not_ready(tmp_path, monkeypatch) -> None:
    folder = _hub_like_folder(tmp_path / "odd", "{% for m in messages %}{{ m['content'] }}{% endfor %}")
    monkeypatch.setenv("BASE_MODEL", str(folder))
    _, check = _figures(materialize_base((tmp_path / "objects").as_uri()))
    assert not check.passed


SEEN = ("Hour 2025-11-15T09:00 UTC, tick 1 of 3 (2 more after this one).\n"
        "- [912345678901234567] @ana (reply to M12): NVDA to the moon, $1,000.00 on it\n"
        "- [news:42] @bo (reply to post-7): RBE is done\n"
        "- [386260166249431684] Will Snapcrap ship? YES 0.708, volume $13.44\n"
        "- RBE (Pylon Holdings) 13.44 (+1.20% this hour)\n"
        "- 386260166249431684 YES: 40.0 shares")


def _grounded(kind: str, **parameters) -> bool:
    from babylon_pipeline.model.valid_actions import is_grounded
    from babylon_pipeline.sim.actions import ParsedAction, parse_response

    action = parse_response(json.dumps({"action": kind, "parameters": parameters}))
    assert isinstance(action, ParsedAction), action
    return is_grounded(action, SEEN)


@pytest.mark.parametrize("market", ["386260166249431684", "912345678901234567"])
def test_an_action_naming_a_shown_snowflake_is_grounded(market) -> None:
    assert _grounded("BUY_SHARES", marketId=market, side="YES", amount=40)
    assert _grounded("SELL_SHARES", marketId=market, side="YES")


@pytest.mark.parametrize("market", [
    "1327094562820064",  # invented: parses, but the game rejects it
    "12", "912345", "4567", "3862601662494316840",  # inside a shown id, or a shown id with more
    "2025", "09", "15T09", "00",  # inside the hour 2025-11-15T09:00
    "13", "44", "000", "708", "20",  # inside prices: 13.44, $1,000.00, 0.708, +1.20%
])
def test_an_action_naming_part_of_a_shown_token_is_not_grounded(market) -> None:
    assert not _grounded("BUY_SHARES", marketId=market, side="YES", amount=40)


def test_tickers_and_posts_are_grounded_as_whole_tokens() -> None:
    assert _grounded("OPEN_PERP", ticker="RBE", side="long", size=10)
    assert _grounded("OPEN_PERP", ticker="$nvda", side="long", size=10)  # read as NVDA, which a post shows
    assert _grounded("CLOSE_PERP", ticker="RBE")
    assert not _grounded("CLOSE_PERP", ticker="RB")  # a prefix of RBE
    assert not _grounded("CLOSE_PERP", ticker="NVD")
    assert _grounded("CREATE_COMMENT", postId="912345678901234567", content="agreed")
    assert _grounded("CREATE_COMMENT", postId="M12", content="agreed")  # `(reply to M12)`
    assert not _grounded("CREATE_COMMENT", postId="M1", content="agreed")  # M12 shown, M1 not
    assert not _grounded("CREATE_COMMENT", postId="M", content="agreed")


@pytest.mark.parametrize(("post", "shown"), [
    ("news:42", True), ("post-7", True),  # ids joined by ':' or '-' are one token ...
    ("news", False), ("42", False), ("post", False), ("7", False),  # ... whose parts are not shown ids
])
def test_ids_with_inner_colons_and_dashes_are_whole_tokens(post, shown) -> None:
    assert _grounded("CREATE_COMMENT", postId=post, content="agreed") is shown


def test_an_action_that_names_nothing_is_not_grounded() -> None:
    assert not _grounded("HOLD")
    assert not _grounded("CREATE_POST", content="386260166249431684 looks cheap")
