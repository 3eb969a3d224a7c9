"""Alerts: one message per incident, to a Slack-compatible webhook, e-mail and a local file.

Pure (no Dagster): `Alert` is what happened, `channels` deliver it, `ledger` remembers which alerts
went out (in the object store, so every process shares it), `notifier` ties them together with
retries, a bound on time and a breaker for dead channels, and `texts` writes the pipeline's own
alerts (failed runs, failed checks, stale windows).
"""

from babylon_pipeline.alerts.alert import SEVERITIES, Alert
from babylon_pipeline.alerts.notifier import Notifier

__all__ = ["SEVERITIES", "Alert", "Notifier"]
