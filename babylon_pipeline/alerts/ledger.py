"""Which alerts went out, and to which channels: one small record per incident in the object store.

`alerts/sent/{sha256 of the key}.json`. A sender claims an incident by creating its record
(`put_if_unchanged(..., None)`: one of two racing processes wins), delivers, then writes which
channels took it. A later send of the same key delivers only to the channels still missing (a
webhook that was down gets the alert once it is back), and nothing when none are. A claim whose
sender died (`sending` for longer than `stale_after`) may be taken over.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from babylon_pipeline.alerts.alert import Alert
from babylon_pipeline.storage import ObjectNotFound, ObjectStore
from babylon_pipeline.storage.keys import check_key

PREFIX = "alerts/sent"


def record_key(alert_key: str) -> str:
    return check_key(f"{PREFIX}/{hashlib.sha256(alert_key.encode('utf-8')).hexdigest()}.json")


@dataclass(frozen=True)
class Claim:
    """This sender's turn: deliver to `missing`, then `AlertLedger.settle`."""

    missing: tuple[str, ...]
    version: str | None
    done: tuple[str, ...]


class AlertLedger:
    def __init__(self, store: ObjectStore, stale_after: timedelta = timedelta(minutes=10)) -> None:
        self._store = store
        self._stale_after = stale_after

    def claim(self, alert: Alert, channels: Iterable[str], now: datetime) -> Claim | None:
        """The channels this sender should deliver to, or None: delivered everywhere already, or
        another sender is delivering it right now."""
        wanted = tuple(channels)
        key = record_key(alert.key)
        for _ in range(3):  # another sender may change the record between our read and write
            try:
                data, version = self._store.get_versioned(key)
            except ObjectNotFound:
                data, version = None, None
            record = json.loads(data) if data is not None else {"done": []}
            done = tuple(record.get("done", []))
            missing = tuple(name for name in wanted if name not in done)
            if not missing:
                return None
            if record.get("state") == "sending" and now - datetime.fromisoformat(record["at"]) < self._stale_after:
                return None
            claimed = self._record(alert, "sending", done, now)
            if self._store.put_if_unchanged(key, claimed, version):
                return Claim(missing=missing, version=self._store.get_versioned(key)[1], done=done)
        return None

    def settle(self, alert: Alert, claim: Claim, delivered: Iterable[str], now: datetime) -> None:
        """Record the channels that now have the alert (released for a later send if some do not)."""
        done = tuple(dict.fromkeys([*claim.done, *delivered]))
        self._store.put_if_unchanged(record_key(alert.key), self._record(alert, "settled", done, now), claim.version)

    @staticmethod
    def _record(alert: Alert, state: str, done: tuple[str, ...], now: datetime) -> bytes:
        record = {"key": alert.key, "title": alert.title, "state": state, "done": list(done), "at": now.isoformat()}
        return json.dumps(record, sort_keys=True).encode("utf-8")
