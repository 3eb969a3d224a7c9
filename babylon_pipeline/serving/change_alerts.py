"""The alerts of deployment changes: a canary started or raised, a promotion, a rollback, an adapter fault.

One alert per change, keyed by the change (`deploy:<version>:<changed_at>` and the like: the deployment's
`changed_at` is that change's moment), so a retried send is not a second message while the same version
deployed again later is a new incident. An adapter fault is keyed by the deployment it left unchanged
(`adapter-fault:<action>:<version>:<changed_at before>`): a watch retrying a promotion every tick
against a broken adapter alerts once. Deployments and promotions are `info`, rollbacks and faults `error`.
"""

from __future__ import annotations

from collections.abc import Mapping

from babylon_pipeline.alerts import Alert
from babylon_pipeline.alerts.alert import FieldValue
from babylon_pipeline.serving.health import HealthCheck
from babylon_pipeline.serving.state import Deployment, describe

WATCH_HINT = "The regression watch promotes it stage by stage or rolls it back; `babylon rollback` takes it off."


def canary_alert(before: Deployment, after: Deployment, actor: str, reason: str, health: HealthCheck | None,
                 extra: Mapping[str, FieldValue]) -> Alert:
    """A canary started (no canary before) or raised to its next stage."""
    version, share = after.canary, f"{after.canary_fraction:.0%}"
    started = before.canary is None
    what = (f"{actor} started {version} as a canary on {share} of the agents" if started else
            f"{actor} raised canary {version} from {before.canary_fraction:.0%} to {share} of the agents (stage "
            f"{after.stage})")
    lines = [f"{what}; {after.in_service or 'the base'} serves the rest.", _reason(reason)]
    if health is not None:
        lines.append(f"Its adapter {health.model} answered the health check ({health.action_type}, "
                     f"{health.latency_ms:.0f} ms).")
    lines.append(WATCH_HINT)
    return Alert(key=f"{'deploy' if started else 'stage'}:{version}:{_at(after)}",
                 title=(f"{version} deployed as a canary on {share} of agents" if started else
                        f"Canary {version} raised to {share} of agents"),
                 text="\n".join(lines), severity="info",
                 fields=_fields(after, actor, extra, version=version, fraction=after.canary_fraction))


def promotion_alert(before: Deployment, after: Deployment, actor: str, reason: str, warnings: tuple[str, ...],
                    extra: Mapping[str, FieldValue]) -> Alert:
    version = after.in_service
    lines = [f"{actor} promoted canary {version}: it serves all agents; {before.in_service or 'the base'} "
             f"is archived.", _reason(reason), *warnings,
             f"If it turns out worse: `babylon rollback` brings {before.in_service or 'the base'} back."]
    return Alert(key=f"promote:{version}:{_at(after)}", title=f"{version} promoted: it serves all agents",
                 text="\n".join(lines), severity="info",
                 fields=_fields(after, actor, extra, version=version, replaced=before.in_service or "base"))


def rollback_alert(before: Deployment, after: Deployment, actor: str, reason: str, warnings: tuple[str, ...],
                   extra: Mapping[str, FieldValue]) -> Alert:
    serving = after.in_service or "the base"
    taken = [v for v in (before.canary, before.in_service) if v is not None and v != after.in_service]
    gone = before.canary if before.canary is not None else before.in_service
    title = (f"Canary {before.canary} rolled back: {serving} serves all agents again" if before.canary is not None
             else f"{gone} rolled back: {serving} serves all agents again")
    lines = [f"{actor} rolled back ({describe(before)} before): {serving} serves all agents; archived: "
             f"{', '.join(taken) or 'none'}.", _reason(reason), *warnings,
             "What to do: look at the archived version's evaluation and windows before deploying it again."]
    return Alert(key=f"rollback:{'+'.join(taken) or serving}:{_at(after)}", title=title, text="\n".join(lines),
                 severity="error", fields=_fields(after, actor, extra, rolled_back=", ".join(taken) or None))


def adapter_fault_alert(action: str, version: str, before: Deployment, actor: str, where: str, error: Exception,
                        extra: Mapping[str, FieldValue]) -> Alert:
    """A load or health check that failed: the change was refused and the deployment is as it was."""
    lines = [f"{actor} tried to {action} {version}; its adapter failed on the {where}: {error}",
             f"Nothing changed: {describe(before)}.",
             f"What to do: check the inference server's log and that {version}'s adapter is where the server reads "
             f"adapters, then {action} again."]
    return Alert(key=f"adapter-fault:{action}:{version}:{_at(before)}", title=f"{version} not {_past(action)}: "
                 f"its adapter failed", text="\n".join(lines), severity="error",
                 fields=_fields(before, actor, extra, version=version, action=action))


def _fields(deployment: Deployment, actor: str, extra: Mapping[str, FieldValue], **facts: FieldValue) -> dict:
    fields = {**facts, "in_service": deployment.in_service or "base", "canary": deployment.canary or "none",
              "actor": actor, **extra}
    return {name: value for name, value in fields.items() if value is not None}


def _reason(reason: str) -> str:
    return f"Reason: {reason}" if reason else "No reason given."


def _at(deployment: Deployment) -> str:
    return deployment.changed_at.isoformat() if deployment.changed_at else "never"


def _past(action: str) -> str:
    return {"deploy": "deployed", "promote": "promoted", "roll back to": "brought back"}.get(action, action)
