"""The `model_versions` table as Dagster metadata, and the one way every change reports it.

Each job that changes the registry or the deployment (training, evaluation, deploy, promote, rollback)
and the regression watch when it applies a change call `record_model_versions` after the change, so the
asset's latest materialization is the table as it stands. Kept apart from the asset (`assets.model_versions`)
because the assets that call it are the asset's own dependencies.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
import sqlalchemy as sa

from babylon_pipeline.serving.models_table import display_table, models_table, status_counts

ASSET = "model_versions"


def versions_metadata(engine: sa.Engine) -> dict[str, Any]:
    """The table as markdown, and how many versions are in each stage (stable names the UI plots)."""
    table = models_table(engine)
    shown = display_table(table)
    return {
        "versions": dg.MetadataValue.md(shown.to_markdown(index=False) if not shown.empty
                                        else "(no versions registered: train one with training_job)"),
        **{f"{status}_versions": count for status, count in status_counts(table).items()},
        "registered_versions": int((table["status"] != "base").sum()),
    }


def record_model_versions(context: dg.OpExecutionContext | dg.AssetExecutionContext | dg.SensorEvaluationContext,
                          engine: sa.Engine, why: str) -> None:
    """A `model_versions` materialization with the table as it is now: logged by the run (an op or asset),
    reported to the instance outside one (a sensor cannot materialize). The change it reports has committed:
    a table that cannot be read (a database without the deployment tables) is a warning, not a failed run."""
    try:
        metadata = versions_metadata(engine)
    except sa.exc.SQLAlchemyError as error:
        context.log.warning(f"{ASSET} not recorded after {why}: {type(error).__name__} (is the database upgraded? "
                            f"`babylon db upgrade`); model_versions_job records it once it can be read")
        return
    event = dg.AssetMaterialization(asset_key=ASSET, description=f"after {why}", metadata=metadata)
    if isinstance(context, dg.SensorEvaluationContext):
        context.instance.report_runless_asset_event(event)
    else:
        context.log_event(event)
