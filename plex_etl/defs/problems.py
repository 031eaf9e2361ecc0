"""Configuration problems where the operator looks: in the asset graph.

A table whose plan entry is broken (not valid YAML, a wrong value, a table renamed or dropped in
MySQL), a child table read through it, a view over it, or a whole source whose files cannot be
read, does not load; everything else does. Each one keeps a place in the code location: a
stand-in asset at the key it would have (its history stays attached), in the group
`configuration_errors`, whose description and metadata say what is wrong and where (file, line,
entry), and whose materialization fails at once with that message. Each stand-in has the check
`configuration_valid`, which fails with severity ERROR: the sensor `plex_etl_configuration_problems`
(RUNNING by default) reports these results without a run whenever the problems change, so the
asset shows a failed check without anybody materializing it; running the check by hand gives
the same result.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg

from plex_etl.defs.alerts import post_alert

CONFIGURATION_CHECK = "configuration_valid"
ERRORS_GROUP = "configuration_errors"
PROBLEMS_SENSOR = "plex_etl_configuration_problems"
SOURCE_STAND_IN = "configuration"  # [source, "configuration"]: a source that cannot be read at all


@dataclass(frozen=True)
class Problem:
    """Something that does not load, at the asset key it would have, and why."""

    key: dg.AssetKey
    message: str  # what is wrong and where (file, line, entry) and what to do
    source: str | None = None  # None: a view
    deps: tuple[dg.AssetKey, ...] = ()  # a view's tables


def stand_in_asset(problem: Problem) -> dg.AssetsDefinition:
    """An asset at `problem.key` that never loads: its materialization fails with the message."""
    what = "source" if problem.key.path[-1] == SOURCE_STAND_IN and problem.source else "asset"
    tags = {"plex_etl/problem": "configuration"}
    if problem.source:
        tags["plex_etl/source"] = problem.source

    @dg.asset(
        key=problem.key,
        deps=list(problem.deps),
        group_name=ERRORS_GROUP,
        tags=tags,
        description=f"ERROR: this {what} does not load (configuration).\n\n{problem.message}",
        metadata={"plex_etl/problem": dg.MetadataValue.text(problem.message)},
    )
    def _stand_in() -> None:
        raise dg.Failure(description=problem.message, allow_retries=False)

    return _stand_in


def _failed(problem: Problem) -> dict:
    """The failed `configuration_valid` result of a stand-in, as a check yields it or a sensor reports it."""
    return {
        "asset_key": problem.key, "check_name": CONFIGURATION_CHECK, "passed": False,
        "severity": dg.AssetCheckSeverity.ERROR, "description": problem.message[:2000],
        "metadata": {"problem": dg.MetadataValue.text(problem.message)},
    }


def problem_checks(problems: Sequence[Problem]) -> dg.AssetChecksDefinition | None:
    """The failing `configuration_valid` check of every stand-in (runnable by hand)."""
    if not problems:
        return None
    by_key = {p.key: p for p in problems}

    @dg.multi_asset_check(
        name="configuration_checks",
        specs=[dg.AssetCheckSpec(CONFIGURATION_CHECK, asset=p.key,
                                 description="the plan and catalog entries of this asset can be loaded")
               for p in problems],
        can_subset=True,
    )
    def _checks(context: dg.AssetCheckExecutionContext):
        for check_key in context.selected_asset_check_keys:
            yield dg.AssetCheckResult(**_failed(by_key[check_key.asset_key]))

    return _checks


def evaluations(problems: Sequence[Problem]) -> list[dg.AssetCheckEvaluation]:
    """The check results the sensor reports without a run, one per stand-in."""
    return [dg.AssetCheckEvaluation(**_failed(p)) for p in problems]


def problems_digest(problems: Sequence[Problem]) -> str:
    text = "\n".join(sorted(f"{p.key.to_user_string()}\t{p.message}" for p in problems))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def problems_sensor(problems: Sequence[Problem]) -> dg.SensorDefinition:
    """Reports each stand-in's failed check when the set of problems changes (its cursor is their
    digest): a code location loaded again with the same problems reports nothing new."""
    digest = problems_digest(problems)
    summary = "; ".join(p.key.to_user_string() for p in problems)

    @dg.sensor(
        name=PROBLEMS_SENSOR,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Reports the configuration problems of the code location (broken plan entries or files, "
        "tables renamed or dropped in MySQL) as failed `configuration_valid` checks of their stand-in assets "
        f"(group {ERRORS_GROUP}).",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        if context.cursor == digest:
            return dg.SkipReason(f"{len(problems)} configuration problem(s), reported: {summary}"
                                 if problems else "no configuration problem")
        for p in problems:
            context.log.error(f"{p.key.to_user_string()} does not load: {p.message}")
        if problems:  # posted once per new set of problems; a failed post fails the tick, tried again
            post_alert(f"plex_etl: {len(problems)} configuration problem(s), not loaded:\n"
                       + "\n".join(f"- {p.key.to_user_string()}: {p.message}" for p in problems), context.log)
        return dg.SensorResult(asset_events=evaluations(problems), cursor=digest)

    return _sensor
