"""Watch the running canary: promote it stage by stage, roll it back on a regression, report starvation.

Each tick is `serving.watcher.watch_tick`: it reads the canary's per-window summaries (`arms.json`,
written by `outcome_rewards`), decides with an always-valid test (`serving.watch`,
`serving.sequential`) and applies the decision through `serving.deploy` with the `inference` resource
(the canary's adapter answers before a promotion; a rolled-back adapter is unloaded). The tick's line, with its
numbers, is the skip reason the UI shows ("canary v1.2.0 at 10 %: 41/200 trajectories (control
v1.1.0: 380), diff +0.03 [-0.05, +0.11]; hold: …"); the sensor starts no runs. Every change, adapter
fault, starvation and a regression whose rollback could not be applied is sent through the `notifier`; a
change it applied is reported as a `model_versions` materialization (a sensor cannot materialize). Settings:
`BABYLON_CANARY_*` and `BABYLON_DEPLOY_APPROVAL`, read at every tick (`serving.watch.WatchConfig`).
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import sqlalchemy as sa

from babylon_pipeline.assets.versions_report import record_model_versions
from babylon_pipeline.resources.inference import InferenceResource
from babylon_pipeline.resources.notifier import NotifierResource
from babylon_pipeline.resources.object_store import ObjectStoreResource
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.serving.watch import WatchConfig
from babylon_pipeline.serving.watcher import watch_tick
from babylon_pipeline.store import tables


@dg.sensor(
    minimum_interval_seconds=120,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 2 minutes: compares the running canary with the control on the windows since it started "
                "(always-valid test); promotes it through the stages, rolls it back on a regression or a guardrail "
                "breach, alerts when it gets no traffic. The skip reason explains each decision with its numbers.",
)
def regression_watch_sensor(
    context: dg.SensorEvaluationContext,
    trajectory_store: TrajectoryStore,
    object_store: ObjectStoreResource,
    notifier: NotifierResource,
    inference: InferenceResource,
) -> dg.SkipReason:
    engine = trajectory_store.engine()
    if not sa.inspect(engine).has_table(tables.deployment.name):
        return dg.SkipReason(f"the trajectory store has no {tables.deployment.name} table: run `babylon db upgrade`")
    store = object_store.open()
    tick = watch_tick(engine, store, inference.inference(store), WatchConfig.from_env(), datetime.now(UTC),
                      notifier.send)
    if tick.decision is not None:
        context.log.info(f"{tick.summary} {tick.decision.tags()}")
    if tick.applied:
        record_model_versions(context, engine, f"the regression watch's decision: {tick.summary}")
    return dg.SkipReason(tick.summary)
