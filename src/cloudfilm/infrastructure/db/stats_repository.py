"""Queries of the commission's dashboard (issue 17): what one day's rollup rows are,
computed from the live tables, which days changed since a watermark, and the reads of the
rollup tables.

A *day* is a local date (the configured zone) given as ``[start, end)`` in UTC; every
computation of a day filters on an indexed time column in that range, so a day costs the
same whether the index holds one month or ten years.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Float,
    and_,
    case,
    delete,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.sql.elements import ColumnElement

from cloudfilm.infrastructure.db.models import (
    AccessGrant,
    AuditEvent,
    Hospital,
    Instance,
    InstanceVersion,
    RecognitionCheck,
    RecognitionItem,
    RecognitionPrice,
    Report,
    Series,
    StatsAlert,
    StatsArea,
    StatsHospital,
    StatsPairDay,
    StatsReportDay,
    StatsReportMonth,
    StatsStudyDay,
    StatsStudyMonth,
    StatsUseDay,
    StatsWatermark,
    Study,
)
from cloudfilm.infrastructure.db.session import as_utc, dialect_of

DAY_TABLES = (StatsStudyDay, StatsReportDay, StatsUseDay, StatsPairDay)
PROVINCE = 0
"""``hospital_id`` of the province's totals in the study and report rollups (an area's
is ``-stats_area.id``; a hospital's its id)."""
STUDY_SUMS = ("studies", "instances", "bytes", "on_time", "late", "undated", "delay_sum_s",
              "no_report_24h", "no_report_72h")
REPORT_SUMS = ("reports", "on_time", "late", "without_images")
ALL_TIME = "0000-00-00"
ALL_MODALITIES = "*"
"""``modality`` of a unit's day (and month) total over its modalities: what every figure not
split by modality reads, one row per unit and day instead of one per modality (never a
DICOM modality, whose values are letters, digits and ``_``)."""
# Audit actions that read a study's images (one record per request; views are counted as
# distinct reader and study per day).
_NOT_VIEWS = ("search", "query", "find", "timeliness", "stats.read")


def seconds_between(conn: Connection, later: Any, earlier: Any) -> ColumnElement[Any]:
    if dialect_of(conn) == "postgresql":
        return func.extract("epoch", later - earlier)
    # SQLite keeps UTC timestamps as text that julianday() reads.
    return (func.julianday(later) - func.julianday(earlier)) * literal_column("86400.0")


def local_day(conn: Connection, column: Any, zone: str, offset_minutes: int) -> Any:
    """The local date of a UTC timestamp column as YYYY-MM-DD (SQLite: the zone's fixed
    offset, which is exact for zones without daylight saving such as Asia/Shanghai)."""
    if dialect_of(conn) == "postgresql":
        return func.to_char(func.timezone(zone, column), "YYYY-MM-DD")
    return func.date(column, f"{offset_minutes:+d} minutes")


# --- one day, from the live tables --------------------------------------------------------


def study_day(conn: Connection, start: datetime, end: datetime, now: datetime,
              deadline_s: int, hospital_ids: Sequence[int] | None = None, *,
              by_day: tuple[str, int] | None = None) -> list[dict[str, Any]]:
    """Rows of ``stats_study_day`` for the studies of one day: exam time in ``[start,
    end)``, or arrival in it when the sender gave no exam time.

    ``by_day`` (zone, offset minutes): ``[start, end)`` spans several local days and each
    row also names its ``day`` (the backfill: one pass over a month, not one per day)."""
    s = Study
    base = func.coalesce(s.exam_at, s.received_at)
    # Two indexed ranges (exam time; arrival of the undated), not a scan of coalesce().
    in_day = or_(and_(s.exam_at >= as_utc(start), s.exam_at < as_utc(end)),
                 and_(s.exam_at.is_(None), s.received_at >= as_utc(start),
                      s.received_at < as_utc(end)))
    if hospital_ids is not None:
        in_day = and_(in_day, s.hospital_id.in_(list(hospital_ids)))
    day_ids = select(s.id).where(in_day)
    mod = (select(Series.study_fk.label("study_fk"), func.min(Series.modality).label("m"))
           .where(Series.study_fk.in_(day_ids)).group_by(Series.study_fk).subquery("mod"))
    rep = (select(Report.study_fk.label("study_fk"),
                  func.min(Report.received_at).label("first"))
           .where(Report.study_fk.in_(day_ids)).group_by(Report.study_fk).subquery("rep"))
    delay = seconds_between(conn, s.received_at, s.exam_at)
    dated = s.exam_at.is_not(None)
    report_delay = seconds_between(conn, rep.c.first, base)
    waited = seconds_between(conn, literal(as_utc(now)), base)

    def without_report(hours: int) -> ColumnElement[Any]:
        # No report within ``hours`` of the exam: came later, or has not come and the
        # hours have passed (until then the study is not counted either way).
        limit = hours * 3600
        return func.sum(case((or_(and_(rep.c.first.is_(None), waited > limit),
                                  report_delay > limit), 1), else_=0))

    modality = func.coalesce(mod.c.m, "")
    # One expression object in the select and the group by: one bound parameter for both.
    keys: list[Any] = [s.hospital_id, modality]
    if by_day is not None:
        keys.append(local_day(conn, base, *by_day))
    stmt = (select(*keys, func.count().label("studies"),
                   func.sum(s.num_instances), func.sum(s.size_bytes),
                   func.sum(case((and_(dated, delay <= deadline_s), 1), else_=0)),
                   func.sum(case((and_(dated, delay > deadline_s), 1), else_=0)),
                   func.sum(case((dated, 0), else_=1)),
                   func.sum(case((dated, sql_cast(delay, Float)), else_=0.0)),
                   func.max(case((dated, sql_cast(delay, Float)), else_=0.0)),
                   without_report(24), without_report(72))
            .select_from(s).outerjoin(mod, mod.c.study_fk == s.id)
            .outerjoin(rep, rep.c.study_fk == s.id)
            .where(in_day).group_by(*keys))
    out = []
    n = len(keys)
    for r in conn.execute(stmt):
        row = {"hospital_id": int(r[0]), "modality": str(r[1])[:16],
               "studies": int(r[n]), "instances": int(r[n + 1] or 0),
               "bytes": int(r[n + 2] or 0), "on_time": int(r[n + 3] or 0),
               "late": int(r[n + 4] or 0), "undated": int(r[n + 5] or 0),
               "delay_sum_s": float(r[n + 6] or 0.0), "delay_max_s": float(r[n + 7] or 0.0),
               "no_report_24h": int(r[n + 8] or 0), "no_report_72h": int(r[n + 9] or 0)}
        if by_day is not None:
            row["day"] = str(r[2])
        out.append(row)
    return out


def work_mem(conn: Connection, size: str) -> None:
    """Let this transaction's sorts and hashes use ``size`` (PostgreSQL; a backfill's pass
    groups millions of studies)."""
    if dialect_of(conn) == "postgresql":
        conn.execute(text(f"SET LOCAL work_mem = '{size}'"))


def report_day(conn: Connection, start: datetime, end: datetime, deadline_s: int,
               hospital_ids: Sequence[int] | None = None, *,
               by_day: tuple[str, int] | None = None) -> list[dict[str, Any]]:
    """Rows of ``stats_report_day`` (``by_day``: as :func:`study_day`)."""
    r = Report
    # listed_at is the exam time, else the arrival time (indexed).
    where = and_(r.listed_at >= as_utc(start), r.listed_at < as_utc(end))
    if hospital_ids is not None:
        where = and_(where, r.hospital_id.in_(list(hospital_ids)))
    delay = seconds_between(conn, r.received_at, r.exam_at)
    dated = r.exam_at.is_not(None)
    keys: list[Any] = [r.hospital_id]
    if by_day is not None:
        keys.append(local_day(conn, r.listed_at, *by_day))
    stmt = (select(func.count(),
                   func.sum(case((and_(dated, delay <= deadline_s), 1), else_=0)),
                   func.sum(case((and_(dated, delay > deadline_s), 1), else_=0)),
                   func.sum(case((r.link_state == "held", 1), else_=0)), *keys)
            .where(where).group_by(*keys))
    out = []
    for n, a, b, c, h, *day in conn.execute(stmt):
        row: dict[str, Any] = {"hospital_id": int(h), "reports": int(n),
                               "on_time": int(a or 0), "late": int(b or 0),
                               "without_images": int(c or 0)}
        if day:
            row["day"] = str(day[0])
        out.append(row)
    return out


def _views(conn: Connection, start: datetime, end: datetime, span: Any) -> list[Any]:
    """Allowed image reads of one day within ``span`` (a condition on ``seq``), with the
    study, its hospital and resident and the reason the policy gave (own-hospital, ...)."""
    a = AuditEvent
    base = and_(a.at >= as_utc(start), a.at < as_utc(end), span, a.outcome == "allowed",
                a.resource_uid != "", a.action.not_in(_NOT_VIEWS))
    cols = (a.actor_kind, a.actor_subject, a.actor_hospital_id, a.reason, a.resident_id,
            a.action)
    by_study = (select(*cols, Study.id.label("study_id"), Study.hospital_id.label("owner"))
                .join(Study, Study.study_instance_uid == a.resource_uid)
                .where(base, a.resource_type == "study"))
    by_series = (select(*cols, Study.id, Study.hospital_id)
                 .join(Series, Series.series_instance_uid == a.resource_uid)
                 .join(Study, Study.id == Series.study_fk)
                 .where(base, a.resource_type == "series"))
    by_instance = (select(*cols, Study.id, Study.hospital_id)
                   .join(Instance, Instance.sop_instance_uid == a.resource_uid)
                   .join(Study, Study.id == Instance.study_fk)
                   .where(base, a.resource_type == "instance"))
    return list(conn.execute(union_all(by_study, by_series, by_instance)))


@dataclass
class AuditTally:
    """One day's counts from the audit trail, read up to ``seq``: sign-ins and distinct
    (reader, study) views, with the cross-hospital ones kept for their grant's mode.

    Kept between refreshes (today's live figures), it lets a refresh read only the records
    appended since: the trail is append-only, and appenders hold the chain head's lock
    until they commit, so records become visible in ``seq`` order (none appears later
    below a ``seq`` already read)."""

    seq: int = 0
    counts: Counter[tuple[int, str]] = field(default_factory=Counter)
    seen: set[tuple[str, int, str]] = field(default_factory=set)
    cross: list[tuple[str, int, int, int | None]] = field(default_factory=list)
    # (doctor, resident) -> grant mode, valid while the day's grants are ``grants``.
    modes: dict[tuple[str, int | None], str] = field(default_factory=dict)
    grants: frozenset[int] = frozenset()


def tally_audit(conn: Connection, tally: AuditTally, start: datetime, end: datetime) -> None:
    """Add to ``tally`` the day's records appended after ``tally.seq``."""
    a = AuditEvent
    top = int(conn.execute(select(func.max(a.seq))).scalar() or 0)
    if top <= tally.seq:
        return
    span = and_(a.seq > tally.seq, a.seq <= top)
    signins = list(conn.execute(
        select(a.actor_kind, func.count())
        .where(a.at >= as_utc(start), a.at < as_utc(end), span, a.action == "sign_in",
               a.outcome == "success").group_by(a.actor_kind)))
    views = _views(conn, start, end, span)
    # Read both before changing the tally: a failed read leaves it as it was.
    counts = tally.counts
    for kind, n in signins:
        counts[(0, "resident_sign_in" if kind == "resident" else "staff_sign_in")] += int(n)
    for row in views:
        what = "download" if row.action == "download" else "view"
        key = (row.actor_subject, int(row.study_id), what)
        if key in tally.seen:
            continue
        tally.seen.add(key)
        owner = int(row.owner)
        if what == "download":
            counts[(owner, "download")] += 1
        elif row.actor_kind == "resident":
            counts[(owner, "resident_view")] += 1
        else:
            viewer = int(row.actor_hospital_id or 0)
            counts[(viewer, "doctor_view")] += 1
            if row.reason == "grant" and viewer != owner:
                tally.cross.append((row.actor_subject, viewer, owner, row.resident_id))
    tally.seq = top


def use_day(conn: Connection, start: datetime, end: datetime, now: datetime,
            tally: AuditTally | None = None
            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows of ``stats_use_day`` and ``stats_pair_day`` for one day: sign-ins, views,
    downloads (audit trail), grants (consent tables), mutual recognition (its checks),
    re-encoding (instance versions).

    ``tally``: the day's audit counts read so far (today's live figures), brought up to
    date here; without it the whole day is read (the rollup)."""
    tally = tally if tally is not None else AuditTally()
    tally_audit(conn, tally, start, end)
    counts: Counter[tuple[int, str]] = Counter(tally.counts)
    g = AccessGrant
    grants = list(conn.execute(
        select(g.id, g.hospital_id, g.mode, g.status, g.expires_at, g.review_status)
        .where(g.requested_at >= as_utc(start), g.requested_at < as_utc(end))))
    # A grant requested today may change a cross view's mode (its doctor's latest grant).
    day_grants = frozenset(int(r[0]) for r in grants)
    if day_grants != tally.grants:
        tally.modes, tally.grants = {}, day_grants
    pairs: Counter[tuple[int, int, str]] = Counter()
    for subject, viewer, owner, resident in tally.cross:
        mode = tally.modes.get((subject, resident))
        if mode is None:
            mode = tally.modes[(subject, resident)] = _grant_mode(conn, subject, resident, end)
        pairs[(viewer, owner, mode)] += 1
    for (viewer, _owner, mode), n in pairs.items():
        counts[(viewer, f"cross_view:{mode}")] += n
    for _id, hospital, mode, status, expires, review in grants:
        if status == "active" and expires is not None and as_utc(expires) <= as_utc(now):
            status = "expired"
        h = int(hospital)
        counts[(h, "grant_requested")] += 1
        counts[(h, f"grant_{status}")] += 1
        counts[(h, f"grant_mode:{mode}")] += 1
        if mode == "break_glass":
            counts[(h, f"break_glass:{review or 'none'}")] += 1
    counts.update(_recognition(conn, start, end))
    v = InstanceVersion
    recoded = (select(v.hospital_id, func.sum(v.size_bytes), func.sum(Instance.size_bytes))
               .join(Instance, Instance.sop_instance_uid == v.sop_instance_uid)
               .where(v.reason == "transcoded", v.superseded_at >= as_utc(start),
                      v.superseded_at < as_utc(end)).group_by(v.hospital_id))
    for hospital, before, after in conn.execute(recoded):
        counts[(int(hospital), "recoded_bytes_before")] += int(before or 0)
        counts[(int(hospital), "recoded_bytes_after")] += int(after or 0)
    use = [{"hospital_id": h, "metric": m[:48], "count": float(n)}
           for (h, m), n in sorted(counts.items()) if n]
    pair_rows = [{"viewer_hospital_id": v_, "owner_hospital_id": o, "mode": m[:16], "views": n}
                 for (v_, o, m), n in sorted(pairs.items())]
    return use, pair_rows


def _grant_mode(conn: Connection, subject: str, resident: int | None, before: datetime) -> str:
    """The mode of the doctor's latest grant for the resident requested before the end of
    the day (the audit record says "grant", not which one)."""
    if resident is None or not subject.startswith("account:") or \
            not subject[8:].isdigit():
        return "unknown"
    g = AccessGrant
    mode = conn.execute(select(g.mode).where(
        g.doctor_account_id == int(subject[8:]), g.resident_id == resident,
        g.requested_at < as_utc(before)).order_by(g.requested_at.desc()).limit(1)).scalar()
    return str(mode) if mode else "unknown"


def _recognition(conn: Connection, start: datetime, end: datetime) -> Counter[tuple[int, str]]:
    """Checks, prompts, decisions, repeats by reason, cost and dose avoided (accepted and
    not performed anyway; price of the ordering hospital's level)."""
    c = RecognitionCheck
    out: Counter[tuple[int, str]] = Counter()
    prices = {(p.item_code, p.level): float(p.price_yuan)
              for p in conn.execute(select(RecognitionPrice.item_code, RecognitionPrice.level,
                                           RecognitionPrice.price_yuan))}
    doses = {code: float(d or 0.0) for code, d in conn.execute(
        select(RecognitionItem.code, RecognitionItem.typical_dose_msv))}
    rows = conn.execute(
        select(c.hospital_id, c.item_code, c.hospital_level, c.decision, c.reason,
               func.count(), func.sum(case((c.priors > 0, 1), else_=0)),
               func.sum(case((c.performed_at.is_not(None), 1), else_=0)))
        # ``month`` (local) is indexed; the local month is the UTC month of the day's
        # first or last instant, whichever side of UTC the zone is.
        .where(c.month.in_(sorted({as_utc(start).strftime("%Y-%m"),
                                   (as_utc(end) - timedelta(seconds=1)).strftime("%Y-%m")})),
               c.at >= as_utc(start), c.at < as_utc(end))
        .group_by(c.hospital_id, c.item_code, c.hospital_level, c.decision, c.reason))
    for hospital, item, level, decision, reason, n, prompted, performed in rows:
        h, n = int(hospital), int(n)
        out[(h, "recog_checks")] += n
        out[(h, "recog_prompts")] += int(prompted or 0)
        if decision == "accepted":
            out[(h, "recog_accepted")] += n
            kept = n - int(performed or 0)
            out[(h, "recog_cost_yuan")] += kept * prices.get((item, level), 0.0)  # type: ignore[assignment]
            out[(h, "recog_dose_msv")] += kept * doses.get(item, 0.0)  # type: ignore[assignment]
        elif decision == "repeat":
            out[(h, f"recog_repeat:{reason or 'other'}")] += n
    return out


# --- which days changed --------------------------------------------------------------------


def changed_days(conn: Connection, source: str, since: str, zone: str,
                 offset_minutes: int, ceiling: datetime) -> tuple[set[str], str]:
    """The local days whose rows ``source`` changed after position ``since`` ("" from
    the start), and the new position.

    A time position never passes ``ceiling`` (the run's start less a margin): a
    transaction still open during this run may commit a row stamped a little earlier,
    and the next run must still see it. Re-reading a day is harmless (a day is replaced
    as a whole); missing one is not."""
    def days(column: Any, where: Any, position: Any) -> tuple[set[str], str]:
        day = local_day(conn, column, zone, offset_minutes)
        found = {str(d) for (d,) in conn.execute(select(day).where(where).distinct())}
        top = conn.execute(select(position).where(where)).scalar()
        if isinstance(top, str) and not top.isdigit():  # SQLite may return max() as text
            top = datetime.fromisoformat(top)
        if isinstance(top, datetime):
            top = min(as_utc(top), as_utc(ceiling))
        return found, _position(top, since)

    # A time position (the id sources' positions are numbers: read only as such).
    after = _time(since) if source in ("study", "report", "grant", "recognition") else None
    if source == "study":
        return days(func.coalesce(Study.exam_at, Study.received_at),
                    Study.updated_at > after, func.max(Study.updated_at))
    if source == "report":
        changed = or_(Report.updated_at > after, Report.linked_at > after)
        return days(func.coalesce(Report.exam_at, Report.received_at), changed,
                    func.max(func.coalesce(Report.linked_at, Report.updated_at)))
    if source == "audit":
        seq = int(since or 0)
        return days(AuditEvent.at, AuditEvent.seq > seq, func.max(AuditEvent.seq))
    if source == "grant":
        g = AccessGrant
        changed = or_(g.requested_at > after, g.decided_at > after, g.revoked_at > after,
                      g.reviewed_at > after)
        latest = func.max(func.coalesce(g.reviewed_at, g.revoked_at, g.decided_at,
                                        g.requested_at))
        return days(g.requested_at, changed, latest)
    if source == "recognition":
        c = RecognitionCheck
        changed = or_(c.at > after, c.decided_at > after, c.performed_at > after)
        return days(c.at, changed, func.max(func.coalesce(c.performed_at, c.decided_at, c.at)))
    if source == "recoded":
        vid = int(since or 0)
        return days(InstanceVersion.superseded_at, InstanceVersion.id > vid,
                    func.max(InstanceVersion.id))
    raise ValueError(source)


SOURCES = ("study", "report", "audit", "grant", "recognition", "recoded")
_EPOCH = "1970-01-01T00:00:00+00:00"


def _time(position: str) -> datetime:
    return as_utc(datetime.fromisoformat(position or _EPOCH))


def _position(top: Any, since: str) -> str:
    """The furthest of ``top`` (what was read) and ``since``: a watermark never goes back."""
    if top is None:
        return since
    if isinstance(top, datetime):
        return max(as_utc(top), _time(since)).isoformat()
    return str(max(int(top), int(since or 0)))


def watermarks(conn: Connection) -> dict[str, str]:
    return {s: p for s, p in conn.execute(select(StatsWatermark.source,
                                                 StatsWatermark.position))}


def set_watermarks(conn: Connection, positions: dict[str, str], now: datetime) -> None:
    conn.execute(delete(StatsWatermark).where(StatsWatermark.source.in_(list(positions))))
    conn.execute(insert(StatsWatermark), [
        {"source": s, "position": p, "updated_at": now} for s, p in positions.items()])


def replace_day(conn: Connection, day: str, studies: list[dict[str, Any]],
                reports: list[dict[str, Any]], use: list[dict[str, Any]],
                pairs: list[dict[str, Any]],
                areas: dict[int, tuple[int, ...]] | None = None) -> None:
    """Replace every rollup row of ``day`` (one transaction: readers see the old or the
    new day, never half), with the province's and each area's sums of the hospitals'
    rows (``areas``: a hospital's area units)."""
    areas = areas or {}
    by_modality = studies + _units(studies, ("modality",), areas)
    for table, rows in ((StatsStudyDay, by_modality + _over_modalities(by_modality)),
                        (StatsReportDay, reports + _units(reports, (), areas)),
                        (StatsUseDay, use), (StatsPairDay, pairs)):
        conn.execute(delete(table).where(table.day == day))
        if rows:
            conn.execute(insert(table), [{"day": day, **r} for r in rows])


def _units(rows: list[dict[str, Any]], keys: tuple[str, ...],
           areas: dict[int, tuple[int, ...]]) -> list[dict[str, Any]]:
    """The day's sums per unit above the hospital: the province (0) and the areas each
    hospital belongs to (its city, its city/county)."""
    acc: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        for unit in (PROVINCE, *areas.get(int(r["hospital_id"]), ())):
            key = (unit, *(r[k] for k in keys))
            entry = acc.get(key)
            if entry is None:
                acc[key] = {**r, "hospital_id": unit}
                continue
            for name, value in r.items():
                if name in keys or name == "hospital_id":
                    continue
                entry[name] = max(entry[name], value) if name == "delay_max_s" else \
                    entry[name] + value
    return list(acc.values())


def _over_modalities(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each unit's total over its modalities (modality ``*``)."""
    acc: dict[int, dict[str, Any]] = {}
    for r in rows:
        entry = acc.get(r["hospital_id"])
        if entry is None:
            acc[r["hospital_id"]] = {**r, "modality": ALL_MODALITIES}
            continue
        for name, value in r.items():
            if name not in ("hospital_id", "modality"):
                entry[name] = max(entry[name], value) if name == "delay_max_s" else \
                    entry[name] + value
    return list(acc.values())


def area_units(conn: Connection) -> dict[int, tuple[int, ...]]:
    """Each registered hospital's area units (``-id`` of its city's and its county's
    ``stats_area`` row), adding the areas the registry names for the first time."""
    rows = conn.execute(select(Hospital.id, Hospital.city, Hospital.county)).all()
    names = {n for _i, city, county in rows for n in _area_names(city, county)}
    known = dict(conn.execute(select(StatsArea.name, StatsArea.id)).all())
    missing = sorted(names - set(known))
    if missing:
        conn.execute(insert(StatsArea), [{"name": n} for n in missing])
        known = dict(conn.execute(select(StatsArea.name, StatsArea.id)).all())
    return {int(i): tuple(-int(known[n]) for n in _area_names(city, county))
            for i, city, county in rows}


def _area_names(city: str | None, county: str | None) -> tuple[str, ...]:
    if not city:
        return ()
    return (city, f"{city}/{county}") if county else (city,)


def area_unit(conn: Connection, name: str) -> int | None:
    """The unit of an area (``city`` or ``city/county``), None if no day has it yet."""
    found = conn.execute(select(StatsArea.id).where(StatsArea.name == name)).scalar()
    return -int(found) if found is not None else None


def roll_months(conn: Connection, months: Iterable[str]) -> None:
    """Recompute the month rows of ``months`` (YYYY-MM) from their day rows (idempotent:
    a month is always the sum of its days as they are now)."""
    for month in sorted(set(months)):
        first, last = f"{month}-01", f"{month}-31"
        for day_t, month_t, keys, sums in (
                (StatsStudyDay, StatsStudyMonth, ("hospital_id", "modality"), STUDY_SUMS),
                (StatsReportDay, StatsReportMonth, ("hospital_id",), REPORT_SUMS)):
            conn.execute(delete(month_t).where(month_t.month == month))
            cols = [literal(month).label("month"), *[getattr(day_t, k) for k in keys],
                    *[func.sum(getattr(day_t, c)) for c in sums]]
            names = ["month", *keys, *sums]
            if day_t is StatsStudyDay:
                cols.append(func.max(day_t.delay_max_s))
                names.append("delay_max_s")
            conn.execute(insert(month_t).from_select(names, select(*cols).where(
                day_t.day >= first, day_t.day <= last).group_by(
                    *[getattr(day_t, k) for k in keys])))


def analyze(conn: Connection) -> None:
    """Fresh planner statistics for the rollup tables after a run that rewrote many days
    (PostgreSQL; a deployment without autovacuum would otherwise plan a year's read for
    the handful of rows the tables held before)."""
    if dialect_of(conn) == "postgresql":
        for table in (*DAY_TABLES, StatsStudyMonth, StatsReportMonth):
            conn.execute(text(f"ANALYZE {table.__tablename__}"))


def update_hospital_times(conn: Connection, since: str) -> None:
    """First and last arrival per hospital, from studies changed after ``since``."""
    s = Study
    found = conn.execute(select(s.hospital_id, func.min(s.received_at), func.max(s.received_at))
                         .where(s.updated_at > _time(since)).group_by(s.hospital_id)).all()
    if not found:
        return
    known = {h: (a, b) for h, a, b in conn.execute(
        select(StatsHospital.hospital_id, StatsHospital.first_received_at,
               StatsHospital.last_received_at)
        .where(StatsHospital.hospital_id.in_([int(r[0]) for r in found])))}
    rows = []
    for hospital, first, last in found:
        first, last = as_utc(_dt(first)), as_utc(_dt(last))
        if hospital in known:
            old_first, old_last = (as_utc(_dt(v)) for v in known[hospital])
            first, last = min(first, old_first), max(last, old_last)
        rows.append({"hospital_id": int(hospital), "first_received_at": first,
                     "last_received_at": last})
    conn.execute(delete(StatsHospital).where(
        StatsHospital.hospital_id.in_([r["hospital_id"] for r in rows])))
    conn.execute(insert(StatsHospital), rows)


def _dt(value: Any) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


# --- reads of the rollup -------------------------------------------------------------------


def hospitals(conn: Connection) -> list[Any]:
    h = Hospital
    return list(conn.execute(
        select(h.id, h.code, h.name, h.level, h.city, h.county, h.public, h.active,
               h.created_at, h.contact_phone, h.alert_webhook,
               StatsHospital.first_received_at, StatsHospital.last_received_at)
        .outerjoin(StatsHospital, StatsHospital.hospital_id == h.id).order_by(h.code)))


def _scoped(column: Any, hospital_ids: Sequence[int] | None) -> Any:
    return literal(True) if hospital_ids is None else column.in_(list(hospital_ids))


def _unit_scope(column: Any, hospital_ids: Sequence[int] | None, unit: int | None,
                by: Sequence[str]) -> Any:
    """A unit's own rows (the province, an area, a hospital) when the sum is not split by
    hospital, else the hospitals' rows of the scope (never both)."""
    if "hospital_id" not in by:
        if hospital_ids is None:
            return column == PROVINCE
        if unit is not None:
            return column == unit
    return and_(column > PROVINCE, _scoped(column, hospital_ids))


def split_period(first: str, last: str, *, latest: bool = False
                 ) -> tuple[list[tuple[str, str]], tuple[str, str] | None]:
    """``[first, last]`` (days) as the whole months inside it and the day ranges of the
    months it cuts: a year is at most 11-13 month rows and two partial months of days.

    ``latest``: ``last`` is the latest day the rollup holds (yesterday: today is never
    stored), so the month row of ``last``'s month is the sum of its days through ``last``
    and that month is read as one row, not day by day (what keeps a period's read the
    same size on the 30th of a month as on the 2nd)."""
    hi = date.fromisoformat(last)
    if latest or (hi + timedelta(days=1)).day == 1:
        end_month, tail = hi.strftime("%Y-%m"), None
    else:
        end_month = (hi.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
        tail = (hi.replace(day=1).isoformat(), last)
    if first <= ALL_TIME:
        start_month, head = "0000-00", None
    else:
        lo = date.fromisoformat(first)
        if lo.day == 1:
            start_month, head = lo.strftime("%Y-%m"), None
        else:
            following = (lo.replace(day=28) + timedelta(days=4)).replace(day=1)
            start_month = following.strftime("%Y-%m")
            head = (first, (following - timedelta(days=1)).isoformat())
    if start_month > end_month:
        return [(first, last)], None
    return [r for r in (head, tail) if r is not None], (start_month, end_month)


def _period_sums(conn: Connection, day_t: Any, month_t: Any, sums: Sequence[str],
                 maxes: Sequence[str], first: str, last: str,
                 hospital_ids: Sequence[int] | None, unit: int | None,
                 by: Sequence[str], latest: bool) -> list[Any]:
    """Sums over ``[first, last]`` grouped by ``by`` (of day, month, hospital_id,
    modality): month rows for the whole months (``latest``: and ``last``'s month, see
    :func:`split_period`), day rows for the rest."""
    if "day" in by:
        days, months = [(first, last)], None
    else:
        days, months = split_period(first, last, latest=latest)

    # Doubles, not PostgreSQL's numeric sums of bigints: the driver hands over floats as
    # they are, where a Decimal per value made converting a province's 2,000 rows cost
    # more than reading them (the figures take floats either way); 0, not NULL, for the
    # one row of an ungrouped sum over no rows.
    def total(agg: Any, column: Any, name: str) -> Any:
        return sql_cast(func.coalesce(agg(column), 0), Float).label(name)

    def part(t: Any, period: Any, where: Any, *, final: bool) -> Any:
        keys = [period.label("month") if k == "month" else getattr(t, k) for k in by]
        if hasattr(t, "modality"):  # the modalities, or their total (never both)
            where = and_(where, t.modality != ALL_MODALITIES if "modality" in by
                         else t.modality == ALL_MODALITIES)

        def agg(f: Any, c: str) -> Any:
            return total(f, getattr(t, c), c) if final else f(getattr(t, c)).label(c)

        stmt = (select(*keys, *[agg(func.sum, c) for c in sums],
                       *[agg(func.max, c) for c in maxes])
                .where(where, _unit_scope(t.hospital_id, hospital_ids, unit, by))
                .group_by(*keys))
        return stmt.order_by(*keys) if final else stmt

    # One table's rows (a period by day, or of whole months only) are the answer as
    # grouped: no second aggregation over the first (half a year-by-day read's time).
    final = not (days and months is not None)
    parts = [part(day_t, func.substr(day_t.day, 1, 7), or_(
        *[and_(day_t.day >= a, day_t.day <= b) for a, b in days]), final=final)
             ] if days else []
    if months is not None:
        parts.append(part(month_t, month_t.month, and_(month_t.month >= months[0],
                                                        month_t.month <= months[1]),
                          final=final))
    if final:
        return list(conn.execute(parts[0]).all())
    both = union_all(*parts).subquery("parts")
    keys = [both.c[k] for k in by]
    stmt = (select(*keys, *[total(func.sum, both.c[c], c) for c in sums],
                   *[total(func.max, both.c[c], c) for c in maxes])
            .group_by(*keys).order_by(*keys))
    return list(conn.execute(stmt).all())


def study_days(conn: Connection, first: str, last: str, hospital_ids: Sequence[int] | None,
               by: Iterable[str], unit: int | None = None, *, latest: bool = False
               ) -> list[Any]:
    """Sums of the study rollup over ``[first, last]`` grouped by ``by`` columns (``unit``:
    the scope's own precomputed rows when not split by hospital; ``latest``: ``last`` is
    yesterday, see :func:`split_period`)."""
    return _period_sums(conn, StatsStudyDay, StatsStudyMonth, STUDY_SUMS, ("delay_max_s",),
                        first, last, hospital_ids, unit, tuple(by), latest)


def report_days(conn: Connection, first: str, last: str, hospital_ids: Sequence[int] | None,
                by: Iterable[str], unit: int | None = None, *, latest: bool = False
                ) -> list[Any]:
    return _period_sums(conn, StatsReportDay, StatsReportMonth, REPORT_SUMS, (), first, last,
                        hospital_ids, unit, tuple(by), latest)


def use_days(conn: Connection, first: str, last: str, hospital_ids: Sequence[int] | None,
             by: Iterable[str]) -> list[Any]:
    t = StatsUseDay
    keys = [getattr(t, k) for k in by]
    scope = _scoped(t.hospital_id, hospital_ids)
    if hospital_ids is not None:
        scope = or_(scope, t.hospital_id == 0)  # province-wide counters (sign-ins)
    stmt = (select(*keys, t.metric, func.sum(t.count).label("count"))
            .where(t.day >= first, t.day <= last, scope)
            .group_by(*keys, t.metric).order_by(*keys, t.metric))
    return list(conn.execute(stmt))


def pair_days(conn: Connection, first: str, last: str,
              hospital_ids: Sequence[int] | None) -> list[Any]:
    t = StatsPairDay
    scope = literal(True) if hospital_ids is None else or_(
        t.viewer_hospital_id.in_(list(hospital_ids)), t.owner_hospital_id.in_(list(hospital_ids)))
    return list(conn.execute(
        select(t.viewer_hospital_id, t.owner_hospital_id, t.mode,
               func.sum(t.views).label("views"))
        .where(t.day >= first, t.day <= last, scope)
        .group_by(t.viewer_hospital_id, t.owner_hospital_id, t.mode)
        .order_by(func.sum(t.views).desc())))


def late_studies(conn: Connection, start: datetime, end: datetime, deadline_s: int,
                 hospital_ids: Sequence[int] | None, limit: int) -> list[Any]:
    """The worst-delayed studies examined in ``[start, end)``: UIDs and accession numbers
    only (no names), for the hospital to chase."""
    s = Study
    delay = seconds_between(conn, s.received_at, s.exam_at)
    return list(conn.execute(
        select(s.study_instance_uid, s.accession_number, s.hospital_id, s.exam_at,
               s.received_at, sql_cast(delay, Float).label("delay_s"))
        .where(s.exam_at >= as_utc(start), s.exam_at < as_utc(end), delay > deadline_s,
               _scoped(s.hospital_id, hospital_ids))
        .order_by(delay.desc()).limit(limit)))


def alerts(conn: Connection, since: datetime, hospital_ids: Sequence[int] | None) -> list[Any]:
    t = StatsAlert
    return list(conn.execute(
        select(t.id, t.hospital_id, t.kind, t.day, t.value, t.opened_at, t.notified)
        .where(t.opened_at >= as_utc(since), _scoped(t.hospital_id, hospital_ids))
        .order_by(t.opened_at.desc(), t.id.desc())))


def add_alert(conn: Connection, hospital_id: int, kind: str, day: str, value: float,
              now: datetime) -> int | None:
    """Open an alert unless that hospital already has it for that day; its id if new."""
    t = StatsAlert
    found = conn.execute(select(t.id).where(t.hospital_id == hospital_id, t.kind == kind,
                                            t.day == day)).scalar()
    if found is not None:
        return None
    result = conn.execute(insert(t).values(hospital_id=hospital_id, kind=kind, day=day,
                                           value=value, opened_at=now, notified=""))
    key = result.inserted_primary_key
    return int(key[0]) if key else None


def mark_notified(conn: Connection, alert_id: int, how: str) -> None:
    from sqlalchemy import update

    conn.execute(update(StatsAlert).where(StatsAlert.id == alert_id).values(notified=how[:64]))


def last_day_rolled(conn: Connection) -> str | None:
    value = conn.execute(select(func.max(StatsStudyDay.day))).scalar()
    return str(value) if value else None
