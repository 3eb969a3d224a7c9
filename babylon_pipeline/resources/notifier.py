"""The notifier as a Dagster resource: `notifier.send(Alert(...)) -> bool`, which never raises.

Channels come from the environment through `EnvVar` (the UI shows variable names, never values):
a Slack-compatible webhook (`BABYLON_ALERT_WEBHOOK_URL`), e-mail over SMTP (`BABYLON_ALERT_SMTP_*`),
and, in the embedded profile (no `DATABASE_URL`), `$BABYLON_HOME/alerts.jsonl`. Every alert is also
written to the Dagster log of the run or sensor tick that sends it. Which alerts went out is kept
in the object store (`alerts/sent/`), so every process agrees an incident was already reported.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from babylon_pipeline.alerts import Alert, Notifier
from babylon_pipeline.alerts.channels import (
    SMTP_SECURITY,
    Channel,
    JsonlChannel,
    LogChannel,
    MisconfiguredChannel,
    SmtpChannel,
    WebhookChannel,
)
from babylon_pipeline.alerts.ledger import AlertLedger
from babylon_pipeline.alerts.notifier import RetryPolicy
from babylon_pipeline.profile import babylon_home
from babylon_pipeline.resources.object_store import ObjectStoreResource, object_store_resource_from_env

_POLICY = RetryPolicy()

# The resource's fields and the variables they are read from (when set).
ALERT_SETTINGS = {
    "webhook_url": "BABYLON_ALERT_WEBHOOK_URL",
    "smtp_host": "BABYLON_ALERT_SMTP_HOST",
    "smtp_port": "BABYLON_ALERT_SMTP_PORT",
    "smtp_user": "BABYLON_ALERT_SMTP_USER",
    "smtp_password": "BABYLON_ALERT_SMTP_PASSWORD",
    "smtp_from": "BABYLON_ALERT_SMTP_FROM",
    "smtp_to": "BABYLON_ALERT_SMTP_TO",
    "smtp_security": "BABYLON_ALERT_SMTP_SECURITY",
    "dagster_url": "BABYLON_DAGSTER_URL",
}
ALERTS_FILE = "alerts.jsonl"


class NotifierResource(dg.ConfigurableResource):
    object_store: ObjectStoreResource = Field(description="where the ledger of sent alerts lives (`alerts/sent/`)")
    webhook_url: str | None = Field(default=None, description="Slack-compatible incoming webhook (a secret)")
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_user: str | None = None
    smtp_password: str | None = Field(default=None, description="only ever through EnvVar")
    smtp_from: str | None = None
    smtp_to: str | None = Field(default=None, description="recipients, separated by commas")
    smtp_security: str | None = Field(default=None, description="tls, starttls or none; default: tls on port 465, "
                                                                 "else starttls")
    jsonl_path: str | None = Field(default=None, description="a local file to append alerts to (embedded profile)")
    dagster_url: str | None = Field(default=None, description="the Dagster UI's base URL, for links to runs")
    attempts: int = _POLICY.attempts
    first_backoff_s: float = _POLICY.first_backoff_s
    attempt_timeout_s: float = _POLICY.attempt_timeout_s
    deadline_s: float = _POLICY.deadline_s
    breaker_s: float = _POLICY.breaker_s

    _log: Any = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._log = context.log

    def send(self, alert: Alert) -> bool:
        """Deliver the alert once per key; False when a channel does not have it. Never raises."""
        log = self._log or dg.get_dagster_logger("babylon.alerts")
        try:
            notifier = self.notifier(log)
        except Exception as error:  # e.g. the object store's settings: the alert still reaches the log
            log.error(f"alert {alert.key} not sent, the notifier cannot start ({type(error).__name__}: {error}): "
                      f"{alert.plain()}")
            return False
        return notifier.send(alert)

    def notifier(self, log: logging.Logger | Any) -> Notifier:
        policy = RetryPolicy(attempts=self.attempts, first_backoff_s=self.first_backoff_s,
                             attempt_timeout_s=self.attempt_timeout_s, deadline_s=self.deadline_s,
                             breaker_s=self.breaker_s)
        return Notifier(self.channels(log), log, AlertLedger(self.object_store.open()), policy)

    def channels(self, log: logging.Logger | Any) -> list[Channel]:
        channels: list[Channel] = [LogChannel(log)]
        if self.webhook_url:
            channels.append(WebhookChannel(self.webhook_url))
        if self.smtp_host or self.smtp_to:
            channels.append(self._email())
        if self.jsonl_path:
            channels.append(JsonlChannel(Path(self.jsonl_path)))
        return channels

    def run_url(self, run_id: str) -> str | None:
        """The run's page in the Dagster UI, when `BABYLON_DAGSTER_URL` says where that is."""
        return f"{self.dagster_url.rstrip('/')}/runs/{run_id}" if self.dagster_url else None

    def _email(self) -> Channel:
        recipients = tuple(r.strip() for r in (self.smtp_to or "").split(",") if r.strip())
        missing = [ALERT_SETTINGS[name] for name, value in
                   (("smtp_host", self.smtp_host), ("smtp_from", self.smtp_from), ("smtp_to", recipients)) if not value]
        if self.smtp_user and not self.smtp_password:
            missing.append(ALERT_SETTINGS["smtp_password"])
        if missing:
            return MisconfiguredChannel("email", f"set {', '.join(missing)}")
        security = self.smtp_security or ("tls" if self.smtp_port == 465 else "starttls")
        if security not in SMTP_SECURITY:
            return MisconfiguredChannel("email", f"{ALERT_SETTINGS['smtp_security']} must be one of "
                                                 f"{', '.join(SMTP_SECURITY)}, got {security!r}")
        return SmtpChannel(host=str(self.smtp_host), port=self.smtp_port, sender=str(self.smtp_from),
                           recipients=recipients, user=self.smtp_user, password=self.smtp_password,
                           security=security)


def notifier_resource_from_env(object_store: ObjectStoreResource | None = None) -> NotifierResource:
    """Each alert variable that is set, through `EnvVar`; `alerts.jsonl` in the embedded profile. The ledger
    lives in `object_store` (default: the one the environment names)."""
    settings: dict[str, Any] = {
        field: (dg.EnvVar.int(name) if field == "smtp_port" else dg.EnvVar(name))
        for field, name in ALERT_SETTINGS.items() if os.environ.get(name)
    }
    jsonl = None if os.environ.get("DATABASE_URL") else str(babylon_home() / ALERTS_FILE)
    return NotifierResource(object_store=object_store or object_store_resource_from_env(), jsonl_path=jsonl,
                            **settings)
