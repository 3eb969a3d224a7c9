"""What an alert is: a key naming the incident, a title, a text saying what, where and what to do."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

SEVERITIES = ("info", "warning", "error", "critical")
FieldValue = str | int | float | bool | None


@dataclass(frozen=True)
class Alert:
    """One incident's message. Alerts with the same `key` are the same incident: it is sent once."""

    key: str
    """Names the incident, e.g. `run-failure:<run id>`, `stale-window:2025-11-15T10:00`, `rollback:v1.2.0`."""
    title: str
    text: str
    """What happened, where (run id, asset, partition, version) and what to do about it."""
    severity: str = "error"
    fields: Mapping[str, FieldValue] = field(default_factory=dict)
    """Short facts shown as `name: value` lines (run id, partition, version, figures)."""

    def __post_init__(self) -> None:
        if not self.key.strip():
            raise ValueError("an alert needs a key naming its incident")
        if not self.title.strip():
            raise ValueError("an alert needs a title")
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, got {self.severity!r}")

    def field_lines(self) -> list[str]:
        return [f"{name}: {value}" for name, value in self.fields.items()]

    def plain(self) -> str:
        """The alert as plain text: e-mail bodies and log lines."""
        return "\n".join([f"[{self.severity.upper()}] {self.title}", self.text, *self.field_lines()]).rstrip()

    def slack_text(self) -> str:
        """Slack's `text` (mrkdwn): the title bold; `&`, `<`, `>` escaped as Slack requires."""
        body = "\n".join([f"*[{self.severity.upper()}] {_slack(self.title)}*", _slack(self.text),
                          *(_slack(line) for line in self.field_lines())])
        return body.rstrip()

    def as_record(self, at: datetime) -> dict[str, Any]:
        """One line of `alerts.jsonl`: the alert with the (naive UTC) time it was sent."""
        return {"at": at.isoformat(), "key": self.key, "severity": self.severity, "title": self.title,
                "text": self.text, "fields": dict(self.fields)}


def _slack(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
