"""Where alerts go: a Slack-compatible webhook, e-mail over SMTP, a JSON-lines file.

Each channel makes one attempt per `deliver` call and raises `DeliveryFailed` saying whether trying
again can help (a 500 or a refused connection can; a 404 or a refused login cannot); the notifier
retries. Messages name a channel by its host only: a webhook URL carries its secret in the path.
"""

from __future__ import annotations

import asyncio
import json
import os
import smtplib
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import httpx2

from babylon_pipeline.alerts.alert import Alert

# smtplib blocks: it runs on these threads so that the notifier's deadline holds for the caller. A
# thread left behind by a server that hangs ends at its socket timeout, never later than `timeout`.
_SMTP_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="babylon-smtp")


class DeliveryFailed(Exception):
    def __init__(self, reason: str, *, retry: bool) -> None:
        super().__init__(reason)
        self.retry = retry


class Log(Protocol):
    """A `logging.Logger` or Dagster's log manager (`context.log`)."""

    def debug(self, msg: str) -> object: ...
    def info(self, msg: str) -> object: ...
    def warning(self, msg: str) -> object: ...
    def error(self, msg: str) -> object: ...


class Channel(Protocol):
    name: str
    """Stable: it names the channel in the ledger's record of what was delivered."""

    def describe(self) -> str:
        """For logs: the kind and host, never a secret."""

    async def deliver(self, alert: Alert, timeout: float) -> None:
        """One attempt within `timeout` seconds; `DeliveryFailed` when it did not arrive."""


@dataclass(frozen=True)
class WebhookChannel:
    """POST `{"text": ...}` (Slack's incoming-webhook format, which Mattermost, Teams' Slack-compatible
    hooks and most chat tools accept). 2xx is delivered; 429 and 5xx are retried; other answers are not."""

    url: str = field(repr=False)  # its path is the secret
    name: str = "webhook"

    def describe(self) -> str:
        return f"webhook at {_host(self.url)}"

    async def deliver(self, alert: Alert, timeout: float) -> None:
        try:
            async with httpx2.AsyncClient(timeout=timeout, follow_redirects=False) as client:
                response = await client.post(self.url, json={"text": alert.slack_text()})
        except httpx2.TimeoutException:
            raise DeliveryFailed(f"{self.describe()}: no answer within {timeout:.1f} s", retry=True) from None
        except httpx2.HTTPError as error:
            raise DeliveryFailed(f"{self.describe()}: {type(error).__name__}", retry=True) from None
        if response.is_success:
            return
        code = response.status_code
        raise DeliveryFailed(f"{self.describe()} answered {code}", retry=code == 429 or code >= 500)


SMTP_SECURITY = ("tls", "starttls", "none")


@dataclass(frozen=True)
class SmtpChannel:
    """One e-mail per alert. `security`: `tls` (TLS from the start, port 465), `starttls` (upgrade a plain
    connection, port 587), or `none` (only for a relay on a trusted network)."""

    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    security: str = "starttls"
    name: str = "email"

    def describe(self) -> str:
        return f"e-mail via {self.host}:{self.port}"

    def message(self, alert: Alert) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = f"[babylon {alert.severity}] {alert.title}"
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message.set_content(alert.plain() + "\n")
        return message

    async def deliver(self, alert: Alert, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(_SMTP_THREADS, self._send, self.message(alert), timeout)

    def _send(self, message: EmailMessage, timeout: float) -> None:
        try:
            if self.security == "tls":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=timeout,
                                                      context=ssl.create_default_context())
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=timeout)
            with smtp:
                if self.security == "starttls":
                    smtp.starttls(context=ssl.create_default_context())
                if self.user:
                    smtp.login(self.user, self.password or "")
                smtp.send_message(message)
        except smtplib.SMTPResponseException as error:  # 4xx: try again later; 5xx: it will not work
            raise DeliveryFailed(f"{self.describe()}: {error.smtp_code} {_text(error.smtp_error)}",
                                 retry=400 <= error.smtp_code < 500) from None
        except smtplib.SMTPRecipientsRefused:
            raise DeliveryFailed(f"{self.describe()}: every recipient refused", retry=False) from None
        except (smtplib.SMTPException, OSError) as error:
            raise DeliveryFailed(f"{self.describe()}: {type(error).__name__}: {error}", retry=True) from None


@dataclass(frozen=True)
class JsonlChannel:
    """One JSON line per alert, appended (`O_APPEND`, one write: concurrent writers never interleave)."""

    path: Path
    name: str = "jsonl"

    def describe(self) -> str:
        return f"file {self.path}"

    async def deliver(self, alert: Alert, timeout: float) -> None:
        line = json.dumps(alert.as_record(datetime.now(UTC).replace(tzinfo=None)), ensure_ascii=False) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode("utf-8"))
            finally:
                os.close(fd)
        except OSError as error:
            raise DeliveryFailed(f"{self.describe()}: {error.strerror or error}", retry=False) from None


@dataclass(frozen=True)
class MisconfiguredChannel:
    """A channel the settings only half name: it fails every alert with what is missing, so the
    notifier logs that once and the other channels still deliver."""

    name: str
    reason: str

    def describe(self) -> str:
        return f"{self.name} (misconfigured: {self.reason})"

    async def deliver(self, alert: Alert, timeout: float) -> None:
        raise DeliveryFailed(self.describe(), retry=False)


@dataclass(frozen=True)
class LogChannel:
    """The alert as a log line: in a run or a sensor tick, Dagster's log shows it."""

    log: Log
    name: str = "log"

    def describe(self) -> str:
        return "the Dagster log"

    async def deliver(self, alert: Alert, timeout: float) -> None:
        write = {"info": self.log.info, "warning": self.log.warning}.get(alert.severity, self.log.error)
        write(f"alert {alert.key}: {alert.plain()}")


def _host(url: str) -> str:
    try:
        parts = urlsplit(url)
        return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    except ValueError:  # e.g. a bad IPv6 literal or port: say so, without the URL
        return "an unparsable URL"


def _text(value: bytes | str) -> str:
    return (value.decode("utf-8", "replace") if isinstance(value, bytes) else value)[:200]
