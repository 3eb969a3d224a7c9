"""Alert delivery against real loopback servers: a webhook, an SMTP server, a file, the object store."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from babylon_pipeline.alerts import Alert, Notifier
from babylon_pipeline.alerts.channels import JsonlChannel, LogChannel, SmtpChannel, WebhookChannel
from babylon_pipeline.alerts.ledger import AlertLedger, record_key
from babylon_pipeline.alerts.notifier import Breaker, RetryPolicy
from babylon_pipeline.resources.notifier import NotifierResource
from babylon_pipeline.resources.object_store import ObjectStoreResource
from babylon_pipeline.storage import open_object_store
from tests.smtp_server import SmtpServer
from tests.webhook_server import WebhookServer, hang, refused_url, status, webhook  # noqa: F401  (a fixture)

FAST = RetryPolicy(attempts=4, first_backoff_s=0.05, max_backoff_s=0.2, attempt_timeout_s=0.5, deadline_s=2.0)
ALERT = Alert(key="run-failure:abc", title="window_job failed (2025-11-15-10:00)",
              text="step <window_trajectories> failed & stopped",
              fields={"run_id": "abc", "partition": "2025-11-15-10:00"})


@pytest.fixture
def store(tmp_path: Path):
    return open_object_store((tmp_path / "objects").as_uri())


@pytest.fixture(params=["local", "s3"])
def any_store(request, tmp_path: Path):
    """Local files (a lock file per key), and the loopback S3 server (conditional PUTs)."""
    if request.param == "local":
        return open_object_store((tmp_path / "objects").as_uri())
    endpoint, bucket = request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_bucket")
    return open_object_store(f"s3://{bucket}/alerts-test", endpoint_url=endpoint)


class Lines(logging.Handler):
    """The log lines a notifier wrote, by level."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def at(self, level: int) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno == level]


@pytest.fixture
def log() -> Iterator[logging.Logger]:
    logger = logging.getLogger(f"test-alerts-{time.monotonic_ns()}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.lines = Lines()  # type: ignore[attr-defined]
    logger.addHandler(logger.lines)  # type: ignore[attr-defined]
    return logger


def notifier(channels, log, store=None, policy=FAST) -> Notifier:
    return Notifier(channels, log, AlertLedger(store) if store is not None else None, policy, Breaker())


def test_webhook_gets_slack_text_with_title_fields_and_escapes(webhook, log) -> None:
    assert notifier([WebhookChannel(webhook.url)], log).send(ALERT) is True
    [body] = webhook.delivered()
    assert set(body) == {"text"}
    assert body["text"].splitlines() == [
        "*[ERROR] window_job failed (2025-11-15-10:00)*",
        "step &lt;window_trajectories&gt; failed &amp; stopped",
        "run_id: abc",
        "partition: 2025-11-15-10:00",
    ]
    assert webhook.received[0].path == "/services/T000/B000/secret-token"


def test_the_same_key_twice_is_posted_once(webhook, log, store) -> None:
    assert notifier([WebhookChannel(webhook.url)], log, store).send(ALERT) is True
    assert notifier([WebhookChannel(webhook.url)], log, store).send(ALERT) is True  # another sender, same store
    assert len(webhook.received) == 1
    assert json.loads(store.get_bytes(record_key(ALERT.key)))["done"] == ["webhook"]
    other = Alert(key="run-failure:def", title="another run failed", text="...")
    assert notifier([WebhookChannel(webhook.url)], log, store).send(other) is True
    assert len(webhook.received) == 2


def test_racing_senders_of_one_incident_post_once(webhook, log, any_store) -> None:
    store = any_store
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(
        notifier([WebhookChannel(webhook.url)], log, store).send(ALERT))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(webhook.received) == 1
    assert results.count(True) == 8  # the others found it sent or being sent


def test_two_500s_then_delivered_once(webhook, log, store) -> None:
    webhook.script(status(500), status(503))
    assert notifier([WebhookChannel(webhook.url)], log, store).send(ALERT) is True
    assert [r.answered for r in webhook.received] == [500, 503, 200]
    assert len(webhook.delivered()) == 1
    assert not log.lines.at(logging.WARNING)


def test_a_4xx_is_not_retried(webhook, log) -> None:
    webhook.script(status(404))
    assert notifier([WebhookChannel(webhook.url)], log).send(ALERT) is False
    assert [r.answered for r in webhook.received] == [404]
    [warning] = log.lines.at(logging.WARNING)
    assert "answered 404 (attempt 1 of 4)" in warning
    assert "secret-token" not in warning  # the URL's secret path never reaches a log


def test_refused_webhook_returns_false_in_bounded_time_and_is_logged_once(log) -> None:
    dead = notifier([WebhookChannel(refused_url())], log, policy=RetryPolicy(
        attempts=3, first_backoff_s=0.05, attempt_timeout_s=0.5, deadline_s=1.0, breaker_s=60))
    started = time.monotonic()
    assert dead.send(ALERT) is False
    assert dead.send(Alert(key="k2", title="second", text="...")) is False  # skipped: the breaker is open
    assert time.monotonic() - started < 1.5
    [warning] = log.lines.at(logging.WARNING)
    assert "ConnectError (attempt 3 of 3)" in warning and "logged once" in warning


def test_hanging_webhook_returns_false_within_the_deadline(webhook, log) -> None:
    webhook.script(hang(), hang(), hang(), hang())
    slow = notifier([WebhookChannel(webhook.url)], log, policy=RetryPolicy(
        attempts=4, first_backoff_s=0.05, attempt_timeout_s=0.4, deadline_s=1.0))
    started = time.monotonic()
    assert slow.send(ALERT) is False
    assert time.monotonic() - started < 1.5
    assert 2 <= len(webhook.received) <= 3  # 0.4 s per try and backoff: the deadline stops the third or fourth


def test_a_dead_channel_does_not_hold_back_the_others_and_gets_the_alert_later(webhook, log, store, tmp_path) -> None:
    """The file gets the alert at once; the webhook, down at first, gets it on a later send, the file not twice."""
    jsonl = JsonlChannel(tmp_path / "alerts.jsonl")
    down = WebhookChannel(refused_url())
    policy = RetryPolicy(attempts=2, first_backoff_s=0.01, attempt_timeout_s=0.5, deadline_s=1.0, breaker_s=0)
    assert Notifier([down, jsonl], log, AlertLedger(store), policy, Breaker()).send(ALERT) is False
    assert json.loads(store.get_bytes(record_key(ALERT.key)))["done"] == ["jsonl"]
    up = WebhookChannel(webhook.url)  # the same channel name, now answering
    assert Notifier([up, jsonl], log, AlertLedger(store), policy, Breaker()).send(ALERT) is True
    assert len(webhook.delivered()) == 1
    assert len((tmp_path / "alerts.jsonl").read_text().splitlines()) == 1


class BuggyChannel:
    """A channel whose code has a bug: it raises what no channel should."""

    name = "buggy"

    def describe(self) -> str:
        return "buggy channel"

    async def deliver(self, alert: Alert, timeout: float) -> None:
        raise KeyError("https://hooks.example/secret-in-a-message")


def test_a_channel_that_raises_anything_fails_alone(log, store) -> None:
    assert notifier([BuggyChannel(), LogChannel(log)], log, store).send(ALERT) is False
    assert json.loads(store.get_bytes(record_key(ALERT.key)))["done"] == ["log"]
    [warning] = log.lines.at(logging.WARNING)
    assert "buggy channel: KeyError (attempt 1 of 4)" in warning and "secret" not in warning
    assert WebhookChannel("http://[::1/hook").describe() == "webhook at an unparsable URL"


def test_jsonl_and_log_channels(tmp_path, log) -> None:
    path = tmp_path / "home" / "alerts.jsonl"
    both = notifier([LogChannel(log), JsonlChannel(path)], log)
    assert both.send(ALERT) is True
    assert both.send(Alert(key="k2", title="canary v1.2.0 has no traffic", text="...", severity="warning")) is True
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["key"] for r in records] == ["run-failure:abc", "k2"]
    assert records[0]["fields"] == {"run_id": "abc", "partition": "2025-11-15-10:00"}
    assert log.lines.at(logging.ERROR)[0].startswith("alert run-failure:abc: [ERROR] window_job failed")
    assert log.lines.at(logging.WARNING) == ["alert k2: [WARNING] canary v1.2.0 has no traffic\n..."]


def test_smtp_delivers_one_mail_with_login(log) -> None:
    server = SmtpServer(user="alerts", password="s3cret").start()
    try:
        channel = SmtpChannel("127.0.0.1", server.port, "babylon@example.org", ("ops@example.org", "b@example.org"),
                              user="alerts", password="s3cret", security="none")
        assert notifier([channel], log).send(ALERT) is True
        [mail] = server.mails
        assert mail.sender == "babylon@example.org" and mail.recipients == ["ops@example.org", "b@example.org"]
        assert mail.message["Subject"] == "[babylon error] window_job failed (2025-11-15-10:00)"
        assert "step <window_trajectories> failed & stopped" in mail.message.get_payload()
        assert server.logins == [("alerts", "s3cret")]
    finally:
        server.stop()


def test_smtp_refused_login_is_not_retried_and_a_4xx_is(log) -> None:
    server = SmtpServer(user="alerts", password="right").start()
    try:
        wrong = SmtpChannel("127.0.0.1", server.port, "a@x.org", ("b@x.org",), user="alerts", password="wrong",
                            security="none")
        assert notifier([wrong], log).send(ALERT) is False
        assert len(server.logins) == 1 and not server.mails
        assert "535 authentication failed (attempt 1 of 4)" in log.lines.at(logging.WARNING)[0]
        server.reject_with = "451 try again later"
        right = SmtpChannel("127.0.0.1", server.port, "a@x.org", ("b@x.org",), user="alerts", password="right",
                            security="none")
        assert notifier([right], log).send(ALERT) is False
        assert len(server.logins) == 1 + 4  # four attempts, each logging in
    finally:
        server.stop()


def test_resource_sends_to_webhook_and_file_and_never_raises(webhook, tmp_path) -> None:
    objects = ObjectStoreResource(url=(tmp_path / "objects").as_uri())
    resource = NotifierResource(object_store=objects, webhook_url=webhook.url, jsonl_path=str(tmp_path / "a.jsonl"),
                                dagster_url="http://dagster.local:3000/")
    assert resource.send(ALERT) is True
    assert resource.send(ALERT) is True
    assert len(webhook.delivered()) == 1 and len((tmp_path / "a.jsonl").read_text().splitlines()) == 1
    assert resource.run_url("abc") == "http://dagster.local:3000/runs/abc"
    other = ObjectStoreResource(url=(tmp_path / "other").as_uri())
    half = NotifierResource(object_store=other, smtp_host="127.0.0.1", jsonl_path=str(tmp_path / "b.jsonl"))
    assert half.send(ALERT) is False  # e-mail names what is missing; the file still gets it
    assert len((tmp_path / "b.jsonl").read_text().splitlines()) == 1
    broken = NotifierResource(object_store=ObjectStoreResource(url="ftp://nowhere"), webhook_url=webhook.url)
    assert broken.send(ALERT) is False


def test_send_works_from_inside_an_event_loop_and_reprs_hold_no_secret(webhook, log) -> None:
    channel = WebhookChannel(webhook.url)

    async def caller() -> bool:
        return notifier([channel], log).send(ALERT)

    assert asyncio.run(caller()) is True and len(webhook.delivered()) == 1
    smtp = SmtpChannel("127.0.0.1", 25, "a@x.org", ("b@x.org",), user="u", password="hunter2")
    assert "secret-token" not in repr(channel) and "hunter2" not in repr(smtp)


def test_alert_refuses_an_unknown_severity() -> None:
    with pytest.raises(ValueError, match="severity must be one of"):
        Alert(key="k", title="t", text="x", severity="fatal")
