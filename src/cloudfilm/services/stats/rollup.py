"""The nightly (and every-few-minutes) rollup: the live tables into per-day rows.

How it stays right and cheap:

- **Incremental.** Each source (studies, reports, the audit trail, grants, recognition
  checks, re-encoded instances) has a watermark (``stats_watermark``: an id, or a time).
  A run asks each source which local days its rows changed on since then (an indexed
  range read, ``updated_at`` / ``seq`` / ``id``), adds the last ``settle_days`` (figures
  that change with time alone: "no report after 72 hours", grant expiry) and recomputes
  exactly those days from the live tables.
- **Idempotent.** A day is replaced as a whole in one transaction (delete its rows, insert
  the new ones), so a rerun, an overlap or two runs at once give the same rows.
- **Resumable.** Watermarks move only after every changed day is written: a run that dies
  half-way leaves the old watermarks, and the next run recomputes the same days.
- **Late uploads correct the past.** A study examined on day D and received on D+3 changes
  ``study.updated_at`` on D+3; the next run finds day D among the changed days and
  recomputes it, so D's late count includes the study.
- **Today** is never stored: the dashboard computes it from the live tables (one day).
- **Units and months.** Beside each hospital's rows a day holds the province's (0) and
  each area's (city, city/county: ``-stats_area.id``) sums, and every month a run touched
  is recomputed from its days (``stats_*_month``), so a province's, a bureau's or a
  hospital's year reads a few dozen rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cloudfilm.infrastructure.db import stats_repository as repo
from cloudfilm.infrastructure.db.session import Database, DatabaseUnavailableError
from cloudfilm.services.errors import ResourceUnavailableError

logger = logging.getLogger(__name__)
# How long a writing transaction may stay open: rows stamped within it are read again.
MARGIN_S = 600
# A run that rewrote more days than this (a first or full run) refreshes the planner's
# statistics of the rollup tables.
ANALYZE_AFTER_DAYS = 31
# Consecutive days read from the live tables in one grouped pass. Measured at 10 M studies
# over 400 days (PostgreSQL, studies' exam days scattered over the heap): three days in
# one pass 12 s, all 400 days in one pass 395 s (the month-by-month passes each join the
# whole series and report tables, so a year in one pass is the cheapest backfill).
RANGE_DAYS = 366
# What one backfill pass may hash (PostgreSQL): each study's first series and report.
BACKFILL_WORK_MEM = "256MB"


@dataclass(frozen=True, slots=True)
class RollupOptions:
    zone: str = "Asia/Shanghai"
    deadline_hours: int = 12
    settle_days: int = 4
    connected_days: int = 7
    silent_days: int = 3
    late_alert_share: float = 0.2
    late_alert_min_studies: int = 5
    workers: int = 2
    """Ranges of days rolled at once (PostgreSQL) when a run has several (a backfill)."""


@dataclass(frozen=True, slots=True)
class RollupResult:
    days: tuple[str, ...]
    alerts: int
    seconds: float


@dataclass(frozen=True, slots=True)
class NewAlert:
    alert_id: int
    hospital_id: int
    rule: str
    """late / silent"""
    day: str
    value: float


class DayClock:
    """Local days of the configured zone and their UTC bounds."""

    def __init__(self, zone: str) -> None:
        self.name = zone
        self.zone = ZoneInfo(zone)

    def today(self, now: datetime) -> date:
        return now.astimezone(self.zone).date()

    def bounds(self, day: date) -> tuple[datetime, datetime]:
        start = datetime(day.year, day.month, day.day, tzinfo=self.zone)
        end = start + timedelta(days=1)
        return start.astimezone(UTC), end.astimezone(UTC)

    @property
    def offset_minutes(self) -> int:
        offset = datetime.now(self.zone).utcoffset()
        return int(offset.total_seconds() // 60) if offset else 0


class StatsRollup:
    """Fills the rollup tables; ``notify`` receives the alerts a run opened."""

    def __init__(self, db: Database, options: RollupOptions,
                 notify: Callable[[list[NewAlert]], None] | None = None) -> None:
        self._db = db
        self.options = options
        self.clock = DayClock(options.zone)
        self._notify = notify
        self.runs = 0
        """Completed runs (what the dashboard's registry cache is keyed by)."""

    def run(self, *, now: datetime | None = None, full: bool = False) -> RollupResult:
        """Recompute every day changed since the watermarks (``full``: every day any
        source has), open alerts, then move the watermarks."""
        started = time.perf_counter()
        now = now or datetime.now(UTC)
        today = self.clock.today(now)
        try:
            with self._db.reading() as conn:
                marks = {} if full else repo.watermarks(conn)
                changed: set[str] = set()
                positions: dict[str, str] = {}
                for source in repo.SOURCES:
                    days, positions[source] = repo.changed_days(
                        conn, source, marks.get(source, ""), self.clock.name,
                        self.clock.offset_minutes, now - timedelta(seconds=MARGIN_S))
                    changed |= days
            settle = {(today - timedelta(days=i)).isoformat()
                      for i in range(1, self.options.settle_days + 1)}
            todo = sorted(d for d in changed | settle if d < today.isoformat())
            with self._db.writing() as conn:
                areas = repo.area_units(conn)
            self._roll_days(todo, now=now, areas=areas)
            with self._db.writing() as conn:
                # Each month a changed day is in, once, from its days as they now are.
                repo.roll_months(conn, {d[:7] for d in todo})
                repo.update_hospital_times(conn, "" if full else marks.get("study", ""))
                if len(todo) > ANALYZE_AFTER_DAYS:
                    repo.analyze(conn)
            opened = self._alerts(now)
            with self._db.writing() as conn:
                repo.set_watermarks(conn, positions, now)
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        self.runs += 1
        if opened and self._notify is not None:
            self._notify(opened)
        seconds = time.perf_counter() - started
        logger.info("cloudfilm.stats.rollup", extra={"days": len(todo), "alerts": len(opened),
                                                      "seconds": round(seconds, 3)})
        return RollupResult(tuple(todo), len(opened), seconds)

    def compute_day(self, conn: Any, day: date, *, now: datetime,
                    hospital_ids: tuple[int, ...] | None = None) -> dict[str, list[Any]]:
        """One day's rows from the live tables (the rollup stores them; the dashboard
        shows today's this way)."""
        start, end = self.clock.bounds(day)
        deadline = self.options.deadline_hours * 3600
        studies = repo.study_day(conn, start, end, now, deadline, hospital_ids)
        reports = repo.report_day(conn, start, end, deadline, hospital_ids)
        use, pairs = repo.use_day(conn, start, end, now)
        return {"studies": studies, "reports": reports, "use": use, "pairs": pairs}

    def _roll_days(self, todo: list[str], *, now: datetime,
                   areas: dict[int, tuple[int, ...]]) -> None:
        """Replace the days of ``todo``: each run of consecutive days read from the live
        tables in one pass per ``RANGE_DAYS`` (a backfill of a year is one grouped read of
        studies and one of reports, not four hundred each), on ``workers`` connections at
        once (PostgreSQL)."""
        ranges = _ranges([date.fromisoformat(d) for d in todo], RANGE_DAYS)
        workers = self.options.workers if self._db.dialect == "postgresql" else 1
        if workers > 1 and len(ranges) > 1:
            with ThreadPoolExecutor(workers) as pool:
                for done in [pool.submit(self.roll_range, a, b, now=now, areas=areas)
                             for a, b in ranges]:
                    done.result()
        else:
            for first, last in ranges:
                self.roll_range(first, last, now=now, areas=areas)

    def roll_range(self, first: date, last: date, *, now: datetime,
                   areas: dict[int, tuple[int, ...]]) -> None:
        """Replace the days ``first``..``last``: the studies and reports of every day from
        one grouped read each, then each day written as :meth:`roll_day` writes it (the
        property test holds the two equal)."""
        start, end = self.clock.bounds(first)[0], self.clock.bounds(last)[1]
        deadline = self.options.deadline_hours * 3600
        zone = (self.clock.name, self.clock.offset_minutes)
        with self._db.reading() as conn:
            if last > first:
                repo.work_mem(conn, BACKFILL_WORK_MEM)
            studies = repo.study_day(conn, start, end, now, deadline, by_day=zone)
            reports = repo.report_day(conn, start, end, deadline, by_day=zone)
        by_day: dict[str, dict[str, list[Any]]] = {}
        for name, rows in (("studies", studies), ("reports", reports)):
            for row in rows:
                day = row.pop("day")
                by_day.setdefault(day, {"studies": [], "reports": []})[name].append(row)
        day = first
        while day <= last:
            with self._db.reading() as conn:
                start, end = self.clock.bounds(day)
                use, pairs = repo.use_day(conn, start, end, now)
            found = by_day.get(day.isoformat(), {"studies": [], "reports": []})
            with self._db.writing() as conn:
                repo.replace_day(conn, day.isoformat(), found["studies"], found["reports"],
                                 use, pairs, areas)
            day += timedelta(days=1)

    def roll_day(self, day: date, *, now: datetime,
                 areas: dict[int, tuple[int, ...]] | None = None) -> None:
        """Replace one day's rows (its month is rolled by :meth:`run` afterwards)."""
        with self._db.reading() as conn:
            rows = self.compute_day(conn, day, now=now)
        with self._db.writing() as conn:
            if areas is None:
                areas = repo.area_units(conn)
            repo.replace_day(conn, day.isoformat(), rows["studies"], rows["reports"],
                             rows["use"], rows["pairs"], areas)

    def _alerts(self, now: datetime) -> list[NewAlert]:
        """Late beyond the threshold yesterday, or silent for ``silent_days``."""
        o = self.options
        yesterday = (self.clock.today(now) - timedelta(days=1)).isoformat()
        opened: list[NewAlert] = []
        with self._db.writing() as conn:
            for row in repo.study_days(conn, yesterday, yesterday, None, ("hospital_id",)):
                dated = int(row.on_time or 0) + int(row.late or 0)
                if dated < o.late_alert_min_studies:
                    continue
                share = int(row.late or 0) / dated
                if share > o.late_alert_share:
                    self._open(conn, opened, int(row.hospital_id), "late", yesterday,
                               round(share, 4), now)
            limit = now - timedelta(days=o.silent_days)
            for h in repo.hospitals(conn):
                if not h.active:
                    continue
                last = h.last_received_at or h.created_at
                last = last if isinstance(last, datetime) else datetime.fromisoformat(last)
                last = last.replace(tzinfo=UTC) if last.tzinfo is None else last
                if last < limit:
                    since = self.clock.today(last).isoformat()
                    days = (now - last).total_seconds() / 86400
                    self._open(conn, opened, int(h.id), "silent", since, round(days, 1), now)
        return opened

    @staticmethod
    def _open(conn: Any, opened: list[NewAlert], hospital: int, kind: str, day: str,
              value: float, now: datetime) -> None:
        alert_id = repo.add_alert(conn, hospital, kind, day, value, now)
        if alert_id is not None:
            opened.append(NewAlert(alert_id, hospital, kind, day, value))


def _ranges(days: list[date], longest: int) -> list[tuple[date, date]]:
    """Sorted ``days`` as runs of consecutive days of at most ``longest`` days each."""
    out: list[tuple[date, date]] = []
    for day in sorted(days):
        if out and day == out[-1][1] + timedelta(days=1) and \
                (day - out[-1][0]).days < longest:
            out[-1] = (out[-1][0], day)
        else:
            out.append((day, day))
    return out
