"""What a backfill tells a person: one line per finished run, a short summary, the quarantine.

Pure text from plain values, so it is tested without running Dagster: `outcome_of` reads what a
finished run says (its success, the partitions its gates held back, steps skipped or failed)
into a `RunOutcome`; the rest turns outcomes and the quarantine's frames into lines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import polars as pl

from feature_pipelines.quality.quarantine import ACTION, PARTITION, QUARANTINE_COLUMNS, RULE
from feature_pipelines.quality.suites import UPSTREAM

if TYPE_CHECKING:
    from feature_pipelines.orchestration.runs import PlannedRun, RangeRun

MESSAGE_CHARS = 150
VALUE_CHARS = 40
ROW_CHARS = 200
SUMMARY_RULES_SHOWN = 5
SUMMARY_FILES_SHOWN = 2
PARTITIONS_SHOWN = 12
# What each quarantine action did to the rows, for a reader who does not know the rule actions.
ACTION_MEANING = {"fail": "fail: its whole partition is held back", "drop": "drop: these rows were removed"}
QUARANTINE_VERB = "feature-pipelines quarantine"
WHAT_TO_DO = "what to do: fix the input named above and re-run `feature-pipelines backfill`; the quarantine says what was held back"
WHAT_TO_DO_ON_ERROR = "what to do: fix the error named above and re-run `feature-pipelines backfill`; the failed run's events are in the UI"


@dataclass(frozen=True)
class RunOutcome:
    """What one finished run of a backfill says, in plain values."""

    job_name: str
    first_partition: str
    last_partition: str
    partitions: int
    success: bool
    run_id: str = ""
    # Asset -> the partitions its blocking checks held back in this run, in order.
    held_back: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Asset -> the first held-back partition's failure message (names the rule and the input).
    first_failure: Mapping[str, str] = field(default_factory=dict)
    # Assets held back only because they read held-back upstream partitions: consequences, not causes.
    refused: frozenset[str] = frozenset()
    skipped_steps: tuple[str, ...] = ()
    # Step failures no gate explains (an exception, not a held-back partition): "step: message".
    errors: tuple[str, ...] = ()

    def held_back_partitions(self) -> list[str]:
        """The partitions any asset of the run held back, in order."""
        return sorted({key for keys in self.held_back.values() for key in keys})

    def complete_partitions(self) -> int:
        """Partitions every asset of the run wrote: none when a step was skipped or broke
        (that asset wrote nothing in this run), else all but the held-back ones."""
        if self.skipped_steps or self.errors:
            return 0
        return self.partitions - len(self.held_back_partitions())


def _first_line(text: str, limit: int = MESSAGE_CHARS) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


# The gates prefix each message with its table and partition; the report already names both.
_WHERE = re.compile(r"^table '[^']*' partition [^:]*(?::\d\d)?: ")


def _message(text: str) -> str:
    return _WHERE.sub("", (text or "").strip(), count=1)


def outcome_of(planned: PlannedRun, run: RangeRun) -> RunOutcome:
    """Read a finished run: held-back partitions are its failed per-partition check evaluations
    (quality_gate emits one per blocking failure, with the partition set); a failed step is an
    error when it is not the step of an asset whose gate held partitions back."""
    result = run.result
    held: dict[str, list[str]] = {}
    first: dict[str, str] = {}
    checks: dict[str, set[str]] = {}
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.partition and not evaluation.passed:
            asset = evaluation.asset_key.to_user_string()
            held.setdefault(asset, []).append(evaluation.partition)
            checks.setdefault(asset, set()).add(evaluation.check_name)
            # A cause beats a consequence: keep the first message of a rule other than the upstream one.
            if asset not in first or (first[asset][0] == UPSTREAM and evaluation.check_name != UPSTREAM):
                first[asset] = (evaluation.check_name, _message(evaluation.description or evaluation.check_name))
    skipped = tuple(event.step_key for event in result.get_step_skipped_events() if event.step_key)
    errors: list[str] = []
    for event in result.get_step_failure_events():
        if event.step_key in held:
            continue  # the gate failed this asset's step on purpose: its held-back partitions say why
        error = getattr(event.event_specific_data, "error", None)
        errors.append(f"{event.step_key}: {_first_line(error.message if error else 'failed')}")
    if not result.success and not held and not errors:
        errors.append("the run failed before any step (see the run in the UI)")
    return RunOutcome(
        job_name=planned.job_name, first_partition=planned.first_partition, last_partition=planned.last_partition,
        partitions=planned.partitions, success=bool(result.success), run_id=result.run_id,
        held_back={asset: tuple(sorted(set(keys))) for asset, keys in held.items()},
        first_failure={asset: message for asset, (_, message) in first.items()},
        refused=frozenset(asset for asset, names in checks.items() if names == {UPSTREAM}),
        skipped_steps=skipped, errors=tuple(errors),
    )


def _scope(first: str, last: str) -> str:
    if not first:
        return "whole tables"
    return first if first == last else f"{first} .. {last}"


def _listed(keys: Sequence[str], shown: int = 3) -> str:
    return ", ".join(keys[:shown]) + (f", ... ({len(keys)} in all)" if len(keys) > shown else "")


def run_line(outcome: RunOutcome) -> str:
    """The plain line for one finished run (no escape codes: for pipes and CI logs)."""
    text = f"{outcome.job_name} {_scope(outcome.first_partition, outcome.last_partition)} ({_plural(outcome.partitions, 'partition')}): "
    if outcome.success:
        return text + "ok"
    details = [f"{asset} held back {_listed(keys)}" for asset, keys in outcome.held_back.items()]
    details += [f"skipped {step}" for step in outcome.skipped_steps]
    details += list(outcome.errors[:1])
    return text + "FAILED" + (f" ({'; '.join(details)})" if details else "")


@dataclass(frozen=True)
class JobSummary:
    job_name: str
    unpartitioned: bool
    planned: int
    ran: int
    complete: int
    held_back: Mapping[str, int]  # asset -> held-back partitions
    held_back_total: int
    first_failure: str
    refused_only: bool  # every held-back asset of the job read held-back upstream partitions
    skipped_steps: tuple[str, ...]
    errors: tuple[str, ...]
    failed_runs: int


def summarize_jobs(planned: Sequence[PlannedRun], outcomes: Sequence[RunOutcome]) -> list[JobSummary]:
    """Per job, in plan order: partitions planned, run, completely written and held back."""
    jobs = list(dict.fromkeys(p.job_name for p in planned))
    summaries = []
    for job in jobs:
        mine = [o for o in outcomes if o.job_name == job]
        held: dict[str, int] = {}
        for o in mine:
            for asset, keys in o.held_back.items():
                held[asset] = held.get(asset, 0) + len(keys)
        causes = [(asset, message) for o in mine for asset, message in o.first_failure.items() if asset not in o.refused]
        refused = {asset for o in mine for asset in o.refused}
        first = next((f"{asset}: {message}" for asset, message in causes), "")
        summaries.append(JobSummary(
            job_name=job,
            unpartitioned=all(not p.first_partition for p in planned if p.job_name == job),
            planned=sum(p.partitions for p in planned if p.job_name == job),
            ran=sum(o.partitions for o in mine),
            complete=sum(o.complete_partitions() for o in mine),
            held_back=held,
            held_back_total=sum(len(o.held_back_partitions()) for o in mine),
            first_failure=first,
            refused_only=bool(held) and set(held) <= refused and not causes,
            skipped_steps=tuple(dict.fromkeys(s for o in mine for s in o.skipped_steps)),
            errors=tuple(e for o in mine for e in o.errors),
            failed_runs=sum(not o.success for o in mine),
        ))
    return summaries


def job_lines(job: JobSummary) -> list[str]:
    """One line per job, plus one saying why when it did not write everything."""
    if job.ran == 0:
        return [f"  {job.job_name}: not run (an earlier run it needs failed)"]
    unit = "whole tables" if job.unpartitioned else _plural(job.planned, "partition")
    if job.failed_runs == 0:
        return [f"  {job.job_name}: {unit}, all written"]
    # An unpartitioned job writes its tables or not: counts would say nothing more.
    parts = ["FAILED"] if job.unpartitioned else ([f"{job.complete} written"] if job.complete else [])
    if job.held_back_total:
        by_asset = ", ".join(f"{asset} {count}" for asset, count in job.held_back.items())
        parts.append(f"{job.held_back_total} held back ({by_asset})")
    # A step that broke or was skipped wrote nothing of its asset; the run's other steps did.
    other = job.ran - job.complete - job.held_back_total
    if other > 0 and not job.unpartitioned:
        parts.append(f"{other} incomplete (a step failed or was skipped, named below)")
    if job.planned > job.ran:
        parts.append(f"{job.planned - job.ran} not run")
    if job.refused_only:
        parts.append("refused: they read held-back upstream partitions")
    lines = [f"  {job.job_name}: {unit}: " + ", ".join(parts)]
    if job.first_failure:
        lines.append(f"    first: {_first_line(job.first_failure)}")
    elif job.errors:
        lines.append(f"    error: {_first_line(job.errors[0])}")
    if job.skipped_steps:
        lines.append(f"    skipped (an upstream step of the same run failed): {_listed(job.skipped_steps)}")
    return lines


def quarantine_rules(summary: pl.DataFrame) -> pl.DataFrame:
    """The quarantine summary per table, rule and action: rows, partitions, the first reason."""
    if summary.height == 0:
        return pl.DataFrame(schema={"table": pl.String, RULE: pl.String, ACTION: pl.String, "rows": pl.Int64,
                                    "partitions": pl.UInt32, "reason": pl.String})
    return (
        summary.group_by("table", RULE, ACTION, maintain_order=True)
        .agg(pl.col("rows").cast(pl.Int64).sum(), pl.col(PARTITION).n_unique().alias("partitions"), pl.col("reason").first())
        .sort("table", RULE, ACTION)
    )


def _hour(value: object) -> str:
    if isinstance(value, datetime):
        moment = value.astimezone(timezone.utc) if value.tzinfo else value
        return moment.strftime("%Y-%m-%dT%H:%MZ" if value.tzinfo else "%Y-%m-%dT%H:%M")
    return str(value)


def file_line(row: Mapping[str, Any]) -> str:
    """A rejected landing file: its table and name, its problems, the hours it covers."""
    try:
        problems = "; ".join(str(p) for p in json.loads(row.get("problems") or "[]"))
    except json.JSONDecodeError:
        problems = str(row.get("problems"))  # written by an older version: show it as stored
    if not row.get("hours_known"):
        hours = "its hours are unknown"
    elif not row.get("hours"):
        hours = "covers no hour"
    else:
        first, last = _hour(row["first_hour"]), _hour(row["last_hour"])
        hours = f"covers {_plural(row['hours'], 'hour')}, " + (first if first == last else f"{first} .. {last}")
    return f"{row['table']}/{row['file']}: {problems or 'breaks its contract'} ({hours})"


def _quarantine_lines(rules: pl.DataFrame, rejected_files: pl.DataFrame) -> list[str]:
    """The quarantine in a few lines: each rule that held rows back for a reason of its own, then
    one line for the refusals that follow from them, then the rejected landing files."""
    if rules.height == 0 and rejected_files.height == 0:
        return []
    lines = [f"quarantine (`{QUARANTINE_VERB}` lists the rows):"]
    causes = rules.filter(pl.col(RULE) != UPSTREAM)
    consequences = rules.filter(pl.col(RULE) == UPSTREAM)
    for row in causes.head(SUMMARY_RULES_SHOWN).iter_rows(named=True):
        lines.append(f"  {row['table']} {row[RULE]} ({row[ACTION]}): {_plural(row['rows'], 'row')} in "
                     f"{_plural(row['partitions'], 'partition')}: {_first_line(_message(row['reason']), 90)}")
    if causes.height > SUMMARY_RULES_SHOWN:
        lines.append(f"  ... and {causes.height - SUMMARY_RULES_SHOWN} more table/rule pair(s)")
    if consequences.height:
        tables = list(dict.fromkeys(consequences["table"].to_list()))
        lines.append(f"  {UPSTREAM}: {_plural(int(consequences['rows'].sum()), 'row')} of {_listed(tables)} refused: "
                     "they read the held-back partitions")
    for row in rejected_files.head(SUMMARY_FILES_SHOWN).iter_rows(named=True):
        lines.append(f"  rejected landing file {_first_line(file_line(row), 130)}")
    if rejected_files.height > SUMMARY_FILES_SHOWN:
        lines.append(f"  ... and {rejected_files.height - SUMMARY_FILES_SHOWN} more rejected landing file(s)")
    return lines


def summary_text(
    planned: Sequence[PlannedRun],
    outcomes: Sequence[RunOutcome],
    quarantine: pl.DataFrame,
    rejected_files: pl.DataFrame,
    *,
    elapsed_seconds: float | None = None,
) -> str:
    """The backfill's closing summary (about 15 lines): per job what was written and held back,
    what the quarantine holds and why, where to look in the UI, and what to do on a failure."""
    ok = bool(outcomes) and all(o.success for o in outcomes) and sum(o.partitions for o in outcomes) == sum(p.partitions for p in planned)
    took = f" in {elapsed_seconds:.1f} s" if elapsed_seconds is not None else ""
    failed_runs = sum(not o.success for o in outcomes)
    head = "every run succeeded" if ok else f"{_plural(failed_runs, 'run')} of {len(outcomes)} failed"
    lines = [f"backfill finished{took}: {head}"]
    for job in summarize_jobs(planned, outcomes):
        lines += job_lines(job)
    rules = quarantine_rules(quarantine)
    lines += _quarantine_lines(rules, rejected_files)
    # Causes first: the assets whose own rules failed, then those refused because they read them.
    refused = {asset for o in outcomes for asset in o.refused}
    held_assets = list(dict.fromkeys(asset for o in outcomes for asset in o.held_back))
    causes = [asset for asset in held_assets if asset not in refused] or held_assets
    if held_assets:
        downstream = len(held_assets) - len(causes)
        lines.append(f"in the UI: Assets > {_listed(causes)}{f' (and {downstream} downstream)' if downstream else ''} > "
                     "Partitions: held-back partitions are red; Checks tab: each rule's verdict")
    elif rules.height:
        lines.append(f"in the UI: Assets > {_listed(list(dict.fromkeys(rules['table'].to_list())))} > Checks tab: rows dropped per rule")
    if any(o.errors for o in outcomes):
        lines.append("in the UI: Runs > the failed run: its step events show the error in full")
    if not ok:
        lines.append(WHAT_TO_DO if held_assets else WHAT_TO_DO_ON_ERROR)
    return "\n".join(lines)


def _value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, datetime):
        text = _hour(value) if value.second == 0 and value.microsecond == 0 else value.isoformat()
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value)
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"


def row_text(row: Mapping[str, object]) -> str:
    """A held-back row as `column=value` pairs without the quarantine's own columns, one line."""
    text = " ".join(f"{name}={_value(value)}" for name, value in row.items() if name not in QUARANTINE_COLUMNS)
    return text if len(text) <= ROW_CHARS else text[: ROW_CHARS - 1] + "…"


def _partitions_text(counts: pl.DataFrame, shown: int | None) -> str:
    pairs = [f"{key} ({rows or 'no rows'})" for key, rows in counts.select(PARTITION, "rows").iter_rows()]
    if shown is not None and len(pairs) > shown:
        return ", ".join(pairs[:shown]) + f", ... and {len(pairs) - shown} more (--table lists them all)"
    return ", ".join(pairs)


def quarantine_text(
    summary: pl.DataFrame,
    rows: Mapping[str, pl.DataFrame],
    files: pl.DataFrame,
    *,
    examples: int = 3,
    partitions_shown: int | None = PARTITIONS_SHOWN,
) -> str:
    """What is held back: per table and rule the rows and partitions (with counts), the first
    reason and up to `examples` rows; then the rejected landing files. `rows[table]` is the
    table's quarantine (`Quarantine.rows`); `partitions_shown` None lists every partition."""
    if summary.height == 0 and files.height == 0:
        return "nothing is held back"
    lines: list[str] = []
    # Tables held back for reasons of their own first; those only refused for their upstream after.
    order = (
        summary.group_by("table").agg((pl.col(RULE) == UPSTREAM).all().alias("refused_only"))
        .sort("refused_only", "table")["table"].to_list()
    )
    for table in order:
        by_table = summary.filter(pl.col("table") == table)
        total = int(by_table["rows"].sum())
        lines.append(f"{table}: {_plural(total, 'row')} held back in {_plural(by_table[PARTITION].n_unique(), 'partition')}")
        for (rule, action), group in by_table.group_by(RULE, ACTION, maintain_order=True):
            count = int(group["rows"].sum())
            lines.append(f"  {rule} ({ACTION_MEANING.get(str(action), action)}): {_plural(count, 'row')}: "
                         f"{_first_line(_message(group['reason'][0] or ''), 240)}")
            lines.append(f"    partitions: {_partitions_text(group.sort(PARTITION), partitions_shown)}")
            held = rows.get(str(table))
            if held is not None and held.height and examples > 0:
                sample = held.filter((pl.col(RULE) == rule) & (pl.col(ACTION) == action)).sort(PARTITION).head(examples)
                lines += [f"    e.g. {row_text(row)}" for row in sample.iter_rows(named=True)]
    if files.height:
        lines.append(f"rejected landing files: {files.height}")
        for row in files.sort("table", "file").iter_rows(named=True):
            lines.append(f"  {file_line(row)}")
            if row.get("copy"):
                lines.append(f"    copy kept at {row['copy']}")
    return "\n".join(lines)


def partitions_by_job(planned: Iterable[PlannedRun]) -> dict[str, int]:
    """Total partitions per job in plan order: the length of each job's progress bar."""
    totals: dict[str, int] = {}
    for run in planned:
        totals[run.job_name] = totals.get(run.job_name, 0) + run.partitions
    return totals
