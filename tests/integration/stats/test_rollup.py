"""The rollup against a direct count, reruns, late uploads, on both databases."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from tests.integration.stats import support

from cloudfilm.infrastructure.db import stats_repository as repo
from cloudfilm.infrastructure.db.models import StatsArea
from cloudfilm.infrastructure.db.stats_repository import split_period
from cloudfilm.services.container import Services
from cloudfilm.services.stats import rollup as rollup_module

NOW = datetime(2026, 11, 20, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
ZONE = ZoneInfo("Asia/Shanghai")
EPOCH = datetime(2026, 10, 28, tzinfo=UTC)  # the studies' days cross a month's end
# Hospitals 0 and 1 share a city, not a county: every area sum has a hospital to leave out.
PLACES = (("杭州", "西湖区"), ("杭州", "上城区"), ("宁波", "海曙区"))

_study = st.tuples(
    st.integers(0, 2),                      # hospital
    st.integers(0, 6 * 24 * 60),            # exam, minutes after EPOCH
    st.integers(0, 3 * 24 * 60),            # upload delay, minutes
    st.sampled_from(["CT", "MR", "DX"]),
    st.one_of(st.none(), st.integers(0, 4 * 24 * 60)),  # report delay, minutes
    st.booleans(),                          # the sender gave no exam time
    st.integers(1, 300),                    # instances
)


def _day(at: datetime) -> str:
    return at.astimezone(ZONE).date().isoformat()


@settings(max_examples=8, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(studies=st.lists(_study, max_size=25))
def test_rollup_equals_a_direct_count(services: Services,
                                      studies: list[tuple[int, int, int, str, int | None, bool,
                                                          int]]) -> None:
    db = services.health._db
    assert services.stats is not None
    support.clear(db)
    ids = [support.hospital(db, f"H{i}", city=c, county=k) for i, (c, k) in enumerate(PLACES)]
    expected: Counter[tuple[str, int, str, str]] = Counter()
    for h, exam_min, delay_min, modality, report_min, undated, n in studies:
        exam = EPOCH + timedelta(minutes=exam_min)
        received = exam + timedelta(minutes=delay_min)
        report = exam + timedelta(minutes=report_min) if report_min is not None else None
        support.study(db, ids[h], exam_at=None if undated else exam, received_at=received,
                      modality=modality, instances=n, size=n * 1000, report_at=report)
        key = (_day(received if undated else exam), ids[h], modality)
        expected[(*key, "studies")] += 1
        expected[(*key, "instances")] += n
        expected[(*key, "bytes")] += n * 1000
        if undated:
            expected[(*key, "undated")] += 1
        elif delay_min * 60 <= 12 * 3600:
            expected[(*key, "on_time")] += 1
        else:
            expected[(*key, "late")] += 1
        base = received if undated else exam
        for hours in (24, 72):
            came = report is not None and (report - base) <= timedelta(hours=hours)
            if not came and (report is not None or NOW - base > timedelta(hours=hours)):
                expected[(*key, f"no_report_{hours}h")] += 1
    services.stats.rollup.run(now=NOW)
    snapshot = support.snapshot(db)
    with db.reading() as conn:
        areas = {-int(i): str(n) for i, n in conn.execute(select(StatsArea.id, StatsArea.name))}
    names = ("studies", "instances", "bytes", "on_time", "late", "undated", "delay_sum_s",
             "delay_max_s", "no_report_24h", "no_report_72h")

    def counted(table: str, period: int) -> Counter[tuple[str, int | str, str, str]]:
        out: Counter[tuple[str, int | str, str, str]] = Counter()
        for row in snapshot[table]:
            when, unit, modality, *values = row
            for name, value in zip(names, values, strict=True):
                if not name.startswith("delay") and value:
                    key = "province" if unit == 0 else areas[unit] if unit < 0 else unit
                    out[(str(when)[:period], key, modality, name)] += int(value)
        return out

    # Every unit above the hospital (province, city, city/county) and every month, from the
    # studies themselves.
    want: Counter[tuple[str, int | str, str, str]] = Counter()
    for (day, h, modality, name), value in expected.items():
        city, county = PLACES[ids.index(h)]
        for unit in (h, "province", city, f"{city}/{county}"):
            # Each modality's row, and the unit's total over them (modality "*").
            want[(day, unit, modality, name)] += value
            want[(day, unit, "*", name)] += value
    assert counted("stats_study_day", 10) == want
    months: Counter[tuple[str, int | str, str, str]] = Counter()
    for (day, unit, modality, name), value in want.items():
        months[(day[:7], unit, modality, name)] += value
    assert counted("stats_study_month", 7) == months


@settings(max_examples=4, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(studies=st.lists(_study, max_size=25), longest=st.integers(1, 4))
def test_backfill_in_ranges_equals_the_day_by_day_rollup(
        services: Services, monkeypatch: pytest.MonkeyPatch, longest: int,
        studies: list[tuple[int, int, int, str, int | None, bool, int]]) -> None:
    """The backfill reads runs of days in one grouped pass each (two at once on
    PostgreSQL); what it stores is what rolling every day on its own stores."""
    db = services.health._db
    assert services.stats is not None
    rollup = services.stats.rollup
    support.clear(db)
    ids = [support.hospital(db, f"H{i}", city=c, county=k) for i, (c, k) in enumerate(PLACES)]
    for h, exam_min, delay_min, modality, report_min, undated, n in studies:
        exam = EPOCH + timedelta(minutes=exam_min)
        support.study(db, ids[h], exam_at=None if undated else exam,
                      received_at=exam + timedelta(minutes=delay_min), modality=modality,
                      instances=n, size=n * 1000,
                      report_at=exam + timedelta(minutes=report_min)
                      if report_min is not None else None)
    monkeypatch.setattr(rollup_module, "RANGE_DAYS", longest)
    rolled = rollup.run(now=NOW, full=True)
    backfill = support.snapshot(db)
    support.clear_rollup(db)  # the live rows stay
    with db.writing() as conn:
        areas = repo.area_units(conn)
    for day in rolled.days:
        rollup.roll_day(date.fromisoformat(day), now=NOW, areas=areas)
    with db.writing() as conn:
        repo.roll_months(conn, {d[:7] for d in rolled.days})
    assert support.snapshot(db) == backfill
    assert any(r[1] > 0 for r in backfill["stats_study_day"]) == bool(studies)


@settings(max_examples=4, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(studies=st.lists(_study, min_size=1, max_size=25))
def test_yesterdays_month_read_whole_equals_its_days(
        services: Services, studies: list[tuple[int, int, int, str, int | None, bool, int]]
) -> None:
    """The figures read the month of yesterday (the latest day rolled) as its month row;
    every period, grouping and scope sums what reading that month's days sums."""
    db = services.health._db
    assert services.stats is not None
    support.clear(db)
    ids = [support.hospital(db, f"H{i}", city=c, county=k) for i, (c, k) in enumerate(PLACES)]
    for h, exam_min, delay_min, modality, report_min, undated, n in studies:
        exam = EPOCH + timedelta(minutes=exam_min)
        # Also studies in the days of yesterday's month (November) the figures cut.
        exam += timedelta(days=10 * (n % 2))
        support.study(db, ids[h], exam_at=None if undated else exam,
                      received_at=exam + timedelta(minutes=delay_min), modality=modality,
                      instances=n, size=n * 1000,
                      report_at=exam + timedelta(minutes=report_min)
                      if report_min is not None else None)
    services.stats.rollup.run(now=NOW)
    yesterday = (NOW.astimezone(ZONE).date() - timedelta(days=1)).isoformat()
    with db.reading() as conn:
        area = repo.area_unit(conn, "杭州")
        for first in ("2026-10-01", "2026-10-29", "2026-11-01", "2026-11-12", repo.ALL_TIME):
            for by in ((), ("hospital_id",), ("hospital_id", "modality"), ("modality",),
                       ("month",)):
                for scope, unit in ((None, None), (ids[:2], area), (ids[2:], ids[2])):
                    for read in (repo.study_days, repo.report_days):
                        if read is repo.report_days and "modality" in by:
                            continue  # reports are not split by modality
                        whole = read(conn, first, yesterday, scope, by, unit, latest=True)
                        days = read(conn, first, yesterday, scope, by, unit)
                        assert [tuple(r) for r in whole] == [tuple(r) for r in days], (
                            first, by, scope, read.__name__)
        total = repo.study_days(conn, repo.ALL_TIME, yesterday, None, (), latest=True)
    assert int(total[0].studies) == len(studies)


def test_rerun_changes_nothing_and_late_uploads_correct_the_past(services: Services) -> None:
    db = services.health._db
    assert services.stats is not None
    rollup = services.stats.rollup
    h = support.hospital(db, "H1")
    exam = datetime(2026, 11, 5, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai, 15 days ago
    support.study(db, h, exam_at=exam, received_at=exam + timedelta(hours=1))
    first = rollup.run(now=NOW)
    assert "2026-11-05" in first.days
    before = support.snapshot(db)
    again = rollup.run(now=NOW)
    assert "2026-11-05" not in again.days  # nothing new: only the settling days re-rolled
    assert support.snapshot(db) == before
    # A study of that day uploaded two weeks late: the day is recomputed, late by one.
    late = NOW - timedelta(hours=1)
    support.study(db, h, exam_at=exam + timedelta(hours=2), received_at=late, updated_at=late)
    third = rollup.run(now=NOW)
    assert "2026-11-05" in third.days
    rows = [r for r in support.snapshot(db)["stats_study_day"]
            if r[0] == "2026-11-05" and r[1] > 0 and r[2] != "*"]  # the hospital's CT row
    assert [(r[3], r[6], r[7]) for r in rows] == [(2, 1, 1)]  # studies, on time, late
    # The watermark did not move backwards: a fourth run re-rolls only the settling days.
    assert "2026-11-05" not in rollup.run(now=NOW).days


def test_id_watermarks_are_read_as_ids(services: Services) -> None:
    """The audit trail's and re-encoding's positions are ids: a run after one that read
    audit records must not parse them as times (it did, and failed)."""
    db = services.health._db
    with db.reading() as conn:
        for source in ("audit", "recoded"):
            days, position = repo.changed_days(conn, source, "6", "Asia/Shanghai", 480, NOW)
            assert days == set() and position == "6"


def test_full_rerun_equals_incremental(services: Services) -> None:
    db = services.health._db
    assert services.stats is not None
    h = support.hospital(db, "H1")
    for i in range(6):
        exam = datetime(2026, 11, 1 + i * 3, 1, 0, tzinfo=UTC)
        support.study(db, h, exam_at=exam, received_at=exam + timedelta(hours=6 * i),
                      report_at=exam + timedelta(hours=30))
        services.stats.rollup.run(now=exam + timedelta(days=1, hours=6 * i))
    services.stats.rollup.run(now=NOW)
    incremental = support.snapshot(db)
    services.stats.rollup.run(now=NOW, full=True)
    assert support.snapshot(db) == incremental


@pytest.mark.parametrize("hours,late", [(11, 0), (13, 1)])
def test_today_comes_from_the_live_tables(services: Services, hours: int, late: int) -> None:
    from cloudfilm.services.access.actor import LOCAL_OPERATOR

    db = services.health._db
    assert services.stats is not None
    exam = NOW - timedelta(hours=8)  # 04:00 today in Shanghai
    services.stats._clock = lambda: exam + timedelta(hours=hours, minutes=1)  # type: ignore[method-assign]
    h = support.hospital(db, "H1")
    support.study(db, h, exam_at=exam, received_at=exam + timedelta(hours=hours))
    head = dict(services.stats.table(LOCAL_OPERATOR, "headline").rows)
    assert head["studies_today"] == 1
    assert head["late_studies_today"] == late


def test_a_period_reads_whole_months_and_the_days_it_cuts() -> None:
    assert split_period("2025-12-05", "2026-12-03") == (
        [("2025-12-05", "2025-12-31"), ("2026-12-01", "2026-12-03")], ("2026-01", "2026-11"))
    assert split_period("2026-11-01", "2026-11-30") == ([], ("2026-11", "2026-11"))
    assert split_period("2026-11-04", "2026-12-03") == ([("2026-11-04", "2026-12-03")], None)
    assert split_period("0000-00-00", "2026-02-28") == ([], ("0000-00", "2026-02"))
    # Through yesterday (the latest day rolled), yesterday's month is one row.
    assert split_period("2025-12-01", "2026-12-03", latest=True) == ([], ("2025-12", "2026-12"))
    assert split_period("2026-11-04", "2026-12-03", latest=True) == (
        [("2026-11-04", "2026-11-30")], ("2026-12", "2026-12"))
    # A period starting inside yesterday's month cannot use its row (it holds earlier days).
    assert split_period("2026-12-02", "2026-12-03", latest=True) == (
        [("2026-12-02", "2026-12-03")], None)
