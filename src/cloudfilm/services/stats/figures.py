"""The dashboard's figures, each a :class:`Table` (the page draws it, the API answers it as
JSON, CSV or XLSX, the CLI prints it), for the asking actor's scope.

Past days come from the rollup tables; today's studies and reports from the live tables
(one day). Every read is checked (``scope_of``) and audited as an administrative read
(``stats.read``, the figure and the scope; no resident). No figure names a patient; the
late-study list carries study UIDs and accession numbers only.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from cloudfilm.infrastructure.db import stats_repository as repo
from cloudfilm.infrastructure.db.session import Database, DatabaseUnavailableError, as_utc
from cloudfilm.services.access.audit import AuditEntry, AuditService
from cloudfilm.services.errors import (
    InvalidInputError,
    NotAuthorizedError,
    NotFoundError,
    ResourceUnavailableError,
)
from cloudfilm.services.kernel.actor import LOCAL_OPERATOR, Actor, Permission, Role
from cloudfilm.services.stats.rollup import StatsRollup
from cloudfilm.services.stats.scope import Scope, scope_of

PERIODS = (7, 30, 90, 365)
USE_CACHE_S = 60
# Today's live rows (one day of the index, every hospital) and the hospital registry are
# shared by every figure and reader for this long: a page of twelve tables, or twenty
# officials at once, read them once, and a figure is never older than the rollup's own
# period (the registry is read again after every rollup run).
LIVE_CACHE_S = 60
MONTH_ALIGNED = 90
REGISTRY_CACHE_S = 300
_STUDY_SUMS = repo.STUDY_SUMS
_REPORT_SUMS = repo.REPORT_SUMS


@dataclass(frozen=True, slots=True)
class Table:
    """One table of figures: ``columns`` name the values of each row."""

    name: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    scope: str = ""

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]


def _share(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def _hours(seconds: float | None) -> float | None:
    return round(seconds / 3600, 1) if seconds is not None else None


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return as_utc(value)


class StatsService:
    """The figures of the commission's dashboard (see the module docstring)."""

    TABLES = ("headline", "coverage", "silent", "timeliness", "trend", "late", "volume",
              "volume_hospitals", "use", "pairs", "recognition", "storage", "alerts")

    def __init__(self, db: Database, rollup: StatsRollup, audit: AuditService, *,
                 clock: Callable[[], datetime] | None = None) -> None:
        self._db = db
        self.rollup = rollup
        self._audit = audit
        self._clock = clock or (lambda: datetime.now(UTC))
        self.options = rollup.options
        self._use_cache: dict[str, tuple[datetime, list[Any], list[Any]]] = {}
        self._use_lock = threading.Lock()
        self._tally: tuple[str, repo.AuditTally] = ("", repo.AuditTally())
        self._live_cache: dict[str, tuple[datetime, dict[str, list[Any]]]] = {}
        self._late_cache: dict[str, tuple[datetime, list[Any]]] = {}
        self._registry: tuple[int, datetime, list[Any]] | None = None
        self._areas: dict[str, int] = {}

    # -- entry points -----------------------------------------------------------------

    def table(self, actor: Actor, name: str, *, days: int = 30) -> Table:
        """One table for ``actor``'s scope over the last ``days`` days (today included)."""
        if name not in self.TABLES:
            raise NotFoundError(f"no figure {name!r}; one of {', '.join(self.TABLES)}")
        return self.tables(actor, (name,), days=days)[name]

    def tables(self, actor: Actor, names: Sequence[str], *, days: int = 30) -> dict[str, Table]:
        """Several tables read together (the page): one check, one audit record."""
        if days not in PERIODS:
            raise InvalidInputError(f"days: one of {', '.join(map(str, PERIODS))}")
        try:
            with self._db.reading() as conn:
                ctx = self._context(conn, actor, names, days)
                out = {n: getattr(self, f"_{n}")(conn, ctx) for n in names}
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        return {n: Table(t.name, t.columns, t.rows, ctx.scope.label) for n, t in out.items()}

    def gauges(self) -> dict[str, int]:
        """The province's headline counts for Prometheus (counts only: the scrape is
        allowed by /metrics' own check and is not audited per read)."""
        try:
            with self._db.reading() as conn:
                now = self._clock()
                hospitals = self._hospitals(conn, now)
                ctx = _Ctx(LOCAL_OPERATOR, Scope("province", "province", None), hospitals,
                           now, self.rollup.clock.today(now), 7)
                today = self._today(conn, ctx)["studies"]
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        return {"hospitals_registered": len(ctx.mine),
                "hospitals_connected": sum(1 for h in ctx.mine if ctx.connected(
                    h, self.options.connected_days)),
                "studies_today": sum(int(r["studies"]) for r in today),
                "late_studies_today": sum(int(r["late"]) for r in today)}

    def scope(self, actor: Actor) -> Scope:
        with self._db.reading() as conn:
            return scope_of(actor, self._hospitals(conn, self._clock()))

    def _hospitals(self, conn: Any, now: datetime) -> list[Any]:
        """The registry with first/last arrivals (cached; read again after a rollup run,
        which moves the arrivals, or after ``REGISTRY_CACHE_S``)."""
        cached = self._registry
        if cached is None or cached[0] != self.rollup.runs or \
                abs((now - cached[1]).total_seconds()) > REGISTRY_CACHE_S:
            cached = (self.rollup.runs, now, repo.hospitals(conn))
            self._registry = cached
        return cached[2]

    def _unit(self, conn: Any, scope: Scope) -> int | None:
        """The rollup unit holding the scope's own sums (None: the province's)."""
        if scope.level == "hospital" and scope.hospital_ids:
            return scope.hospital_ids[0]
        if scope.level != "area":
            return None
        if scope.label not in self._areas:
            unit = repo.area_unit(conn, scope.label)
            if unit is None:
                return None  # not rolled yet: the sum over its hospitals' rows
            self._areas[scope.label] = unit
        return self._areas[scope.label]

    # -- context --------------------------------------------------------------------------

    def _context(self, conn: Any, actor: Actor, names: Sequence[str], days: int) -> _Ctx:
        now = self._clock()
        hospitals = self._hospitals(conn, now)
        try:
            scope = scope_of(actor, hospitals)
        except NotAuthorizedError:
            self._audit.write([AuditEntry(actor, "stats.read", "denied", "stats",
                                          ",".join(names)[:64], reason="not-permitted")])
            raise
        # An administrative read: who looked at which figures of which scope (no resident).
        self._audit.write([AuditEntry(actor, "stats.read", "allowed", "stats",
                                      ",".join(names)[:64], reason=scope.level,
                                      detail={"scope": scope.label, "days": days})])
        today = self.rollup.clock.today(now)
        return _Ctx(actor, scope, hospitals, now, today, days, self._unit(conn, scope))

    def _live(self, conn: Any, ctx: _Ctx) -> dict[str, list[Any]]:
        """Today's rows of every hospital, from the live tables (cached ``LIVE_CACHE_S``)."""
        key = ctx.today.isoformat()
        cached = self._live_cache.get(key)
        if cached is None or abs((ctx.now - cached[0]).total_seconds()) > LIVE_CACHE_S:
            start, end = self.rollup.clock.bounds(ctx.today)
            deadline = self.options.deadline_hours * 3600
            cached = (ctx.now, {
                "studies": repo.study_day(conn, start, end, ctx.now, deadline, None),
                "reports": repo.report_day(conn, start, end, deadline, None)})
            self._live_cache = {key: cached}
        return cached[1]

    def _today(self, conn: Any, ctx: _Ctx) -> dict[str, list[Any]]:
        """Today's rows of the scope's hospitals."""
        if ctx.live is None:
            live = self._live(conn, ctx)
            ids = ctx.scope.hospital_ids
            mine = None if ids is None else set(ids)
            ctx.live = {name: [r for r in rows if mine is None or r["hospital_id"] in mine]
                        for name, rows in live.items()}
        return ctx.live

    def _studies(self, conn: Any, ctx: _Ctx, by: Sequence[str], *, first: str | None = None,
                 ids: Sequence[int] | bool | None = False) -> list[dict[str, Any]]:
        """Study sums over the period (rollup + today's live rows) grouped by ``by``
        (of day, hospital_id, modality)."""
        scope_ids = ctx.scope.hospital_ids if ids is False else ids
        first = first or ctx.first
        # Yesterday is the latest day rolled: its month's row is read whole.
        rows = repo.study_days(conn, first, ctx.yesterday, scope_ids,  # type: ignore[arg-type]
                               by, unit=ctx.unit if ids is False else None, latest=True)
        # Rows are the ``by`` keys, then the sums and the maximum, as floats.
        names = (*by, *_STUDY_SUMS, "delay_max_s")
        width = len(by)
        acc: dict[tuple[Any, ...], dict[str, Any]] = {
            tuple(r[:width]): dict(zip(names, r, strict=True)) for r in rows}
        if ids is False or ids is None:
            live = self._today(conn, ctx)["studies"] if ids is False else self._province_today(
                conn, ctx)
            for r in live:
                values = {**r, "day": ctx.today.isoformat(), "month": ctx.today.isoformat()[:7]}
                key = tuple(values[k] for k in by)
                entry = acc.setdefault(key, {**{k: values[k] for k in by},
                                             **{c: 0.0 for c in _STUDY_SUMS},
                                             "delay_max_s": 0.0})
                for c in _STUDY_SUMS:
                    entry[c] += float(values[c])
                entry["delay_max_s"] = max(entry["delay_max_s"], float(values["delay_max_s"]))
        return [acc[k] for k in sorted(acc, key=lambda k: tuple(str(x) for x in k))]

    def _province_today(self, conn: Any, ctx: _Ctx) -> list[Any]:
        return self._live(conn, ctx)["studies"]

    def _reports(self, conn: Any, ctx: _Ctx, by: Sequence[str]) -> list[dict[str, Any]]:
        acc: dict[tuple[Any, ...], dict[str, Any]] = {}
        width = len(by)
        for r in repo.report_days(conn, ctx.first, ctx.yesterday, ctx.scope.hospital_ids, by,
                                  unit=ctx.unit, latest=True):
            acc[tuple(r[:width])] = {**dict(zip(by, r, strict=False)),
                                     **dict(zip(_REPORT_SUMS, map(int, r[width:]),
                                                strict=True))}
        for r in self._today(conn, ctx)["reports"]:
            values = {**r, "day": ctx.today.isoformat()}
            key = tuple(values[k] for k in by)
            entry = acc.setdefault(key, {**{k: values[k] for k in by},
                                         **{c: 0 for c in _REPORT_SUMS}})
            for c in _REPORT_SUMS:
                entry[c] += int(values[c])
        return list(acc.values())

    def _use_rows(self, conn: Any, ctx: _Ctx) -> list[Any]:
        """Use counters over the period: the rollup plus today's (live, cached a minute)."""
        acc: dict[str, float] = defaultdict(float)
        for r in repo.use_days(conn, ctx.first, ctx.yesterday, ctx.scope.hospital_ids, ()):
            acc[str(r.metric)] += float(r.count)
        use, _pairs = self._today_use(conn, ctx)
        ids = ctx.scope.hospital_ids
        for r in use:
            if ids is None or r["hospital_id"] in ids or r["hospital_id"] == 0:
                acc[r["metric"]] += float(r["count"])
        return [_Row(metric=m, count=c) for m, c in sorted(acc.items())]

    def _today_use(self, conn: Any, ctx: _Ctx) -> tuple[list[Any], list[Any]]:
        """Today's use rows (cached ``USE_CACHE_S``). A refresh reads only the audit
        records appended since the last one (the day's tally is kept; a new day starts
        a new one); while one runs, other readers take the previous figures."""
        key = ctx.today.isoformat()
        cached = self._use_cache.get(key)
        if cached is not None and (ctx.now - cached[0]).total_seconds() <= USE_CACHE_S:
            return cached[1], cached[2]
        if not self._use_lock.acquire(blocking=cached is None):
            return cached[1], cached[2]  # type: ignore[index]
        try:
            done = self._use_cache.get(key)  # by the refresh this reader waited for
            if done is not None and (ctx.now - done[0]).total_seconds() <= USE_CACHE_S:
                return done[1], done[2]
            if self._tally[0] != key:
                self._tally = (key, repo.AuditTally())
            start, end = self.rollup.clock.bounds(ctx.today)
            cached = (ctx.now, *repo.use_day(conn, start, end, ctx.now, self._tally[1]))
            self._use_cache = {key: cached}
        finally:
            self._use_lock.release()
        return cached[1], cached[2]

    def warm(self) -> None:
        """Read today's audit trail once (the first tally of a process reads the whole
        day: seconds at half a million records), so that no reader waits for it."""
        with self._db.reading() as conn:
            now = self._clock()
            ctx = _Ctx(LOCAL_OPERATOR, Scope("province", "province", None), [], now,
                       self.rollup.clock.today(now), 7)
            self._today_use(conn, ctx)

    # -- figures ---------------------------------------------------------------------------

    def _headline(self, conn: Any, ctx: _Ctx) -> Table:
        mine = ctx.mine
        connected = [h for h in mine if ctx.connected(h, self.options.connected_days)]
        public = [h for h in mine if h.public]
        public_connected = [h for h in connected if h.public]
        period = self._studies(conn, ctx, ())
        total = period[0] if period else {c: 0.0 for c in _STUDY_SUMS}
        today = [r for r in self._today(conn, ctx)["studies"]]
        all_time = self._studies(conn, ctx, (), first=repo.ALL_TIME)
        ever = all_time[0] if all_time else {c: 0.0 for c in _STUDY_SUMS}
        cross = sum(float(r.count) for r in self._use_rows(conn, ctx)
                    if str(r.metric).startswith("cross_view:"))
        open_alerts = len(repo.alerts(conn, ctx.now - timedelta(days=7), ctx.scope.hospital_ids))
        dated = total["on_time"] + total["late"]
        rows: list[tuple[Any, ...]] = [
            ("hospitals_registered", len(mine)),
            ("hospitals_connected", len(connected)),
            ("public_hospitals", len(public)),
            ("public_hospitals_connected", len(public_connected)),
            ("public_connected_share", _share(len(public_connected), len(public))),
            ("studies_today", sum(r["studies"] for r in today)),
            ("late_studies_today", sum(r["late"] for r in today)),
            ("studies_period", int(total["studies"])),
            ("on_time_share_period", _share(total["on_time"], dated)),
            ("late_studies_period", int(total["late"])),
            ("studies_total", int(ever["studies"])),
            ("instances_total", int(ever["instances"])),
            ("bytes_total", int(ever["bytes"])),
            ("cross_hospital_views_period", int(cross)),
            ("alerts_open_7d", open_alerts),
        ]
        if ctx.scope.level == "hospital":
            # A hospital administrator compares itself with the province's average.
            province = self._studies(conn, ctx, (), ids=None)
            p = province[0] if province else {c: 0.0 for c in _STUDY_SUMS}
            n = max(1, sum(1 for h in ctx.hospitals if h.active))
            rows += [("province_on_time_share_period", _share(p["on_time"],
                                                              p["on_time"] + p["late"])),
                     ("province_studies_per_hospital_period", round(p["studies"] / n, 1))]
        return Table("headline", ("figure", "value"), rows)

    def _coverage(self, conn: Any, ctx: _Ctx) -> Table:
        acc: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
        for h in ctx.mine:
            entry = acc[(h.city or "-", h.county or "-", h.level or "-")]
            on = ctx.connected(h, self.options.connected_days)
            entry[0] += 1
            entry[1] += int(on)
            entry[2] += int(not ctx.connected(h, self.options.silent_days))
            entry[3] += int(bool(h.public))
            entry[4] += int(bool(h.public) and on)
        rows = [(*k, *v, _share(v[1], v[0])) for k, v in sorted(acc.items())]
        return Table("coverage", ("city", "county", "level", "registered", "connected",
                                  "silent", "public", "public_connected", "connected_share"),
                     rows)

    def _silent(self, conn: Any, ctx: _Ctx) -> Table:
        rows = []
        for h in ctx.mine:
            if ctx.connected(h, self.options.silent_days):
                continue
            last = _aware(h.last_received_at)
            days = (ctx.now - (last or _aware(h.created_at) or ctx.now)).total_seconds() / 86400
            rows.append((h.code, h.name, h.city, h.county, h.level,
                         self.rollup.clock.today(last).isoformat() if last else "",
                         round(days, 1)))
        rows.sort(key=lambda r: -float(r[-1]))
        return Table("silent", ("hospital_code", "hospital_name", "city", "county", "level",
                                "last_upload_day", "days_silent"), rows)

    def _timeliness(self, conn: Any, ctx: _Ctx) -> Table:
        reports = {r["hospital_id"]: r for r in self._reports(conn, ctx, ("hospital_id",))}
        rows = []
        for s in self._studies(conn, ctx, ("hospital_id",)):
            h = ctx.by_id.get(int(s["hospital_id"]))
            if h is None:
                continue
            r = reports.get(s["hospital_id"], {c: 0 for c in _REPORT_SUMS})
            dated = s["on_time"] + s["late"]
            rows.append((h.code, h.name, h.city, int(s["studies"]), int(s["on_time"]),
                         int(s["late"]), _share(s["late"], dated),
                         _hours(s["delay_sum_s"] / dated) if dated else None,
                         _hours(s["delay_max_s"]), int(s["no_report_24h"]),
                         int(s["no_report_72h"]), r["reports"], r["on_time"], r["late"],
                         r["without_images"]))
        # The ranking: the largest share of late studies first.
        rows.sort(key=lambda x: (-(x[6] or 0), -x[5], x[0]))
        return Table("timeliness", (
            "hospital_code", "hospital_name", "city", "studies", "on_time", "late",
            "late_share", "mean_delay_h", "max_delay_h", "no_report_24h", "no_report_72h",
            "reports", "reports_on_time", "reports_late", "reports_without_images"), rows)

    def _trend(self, conn: Any, ctx: _Ctx) -> Table:
        reports = {r["day"]: r for r in self._reports(conn, ctx, ("day",))}
        rows = []
        for s in self._studies(conn, ctx, ("day",)):
            r = reports.get(s["day"], {c: 0 for c in _REPORT_SUMS})
            dated = s["on_time"] + s["late"]
            rows.append((s["day"], int(s["studies"]), int(s["on_time"]), int(s["late"]),
                         _share(s["on_time"], dated), r["reports"], r["late"]))
        return Table("trend", ("day", "studies", "on_time", "late", "on_time_share",
                               "reports", "reports_late"), rows)

    def _late(self, conn: Any, ctx: _Ctx) -> Table:
        start, _ = self.rollup.clock.bounds(ctx.today - timedelta(days=min(ctx.days, 7) - 1))
        _, end = self.rollup.clock.bounds(ctx.today)
        # From the live study table (a week of it, for the worst 100): cached per scope
        # like today's rows, so a page or an API client reading again pays nothing.
        key = f"{ctx.scope.level}:{ctx.scope.label}:{start.isoformat()}"
        cached = self._late_cache.get(key)
        if cached is None or abs((ctx.now - cached[0]).total_seconds()) > LIVE_CACHE_S:
            cached = (ctx.now, repo.late_studies(conn, start, end,
                                                 self.options.deadline_hours * 3600,
                                                 ctx.scope.hospital_ids, 100))
            if len(self._late_cache) > 256:
                self._late_cache.clear()
            self._late_cache[key] = cached
        found = cached[1]
        rows = []
        for r in found:
            h = ctx.by_id.get(int(r.hospital_id))
            rows.append((r.study_instance_uid, r.accession_number, h.code if h else "",
                         _aware(r.exam_at), _aware(r.received_at), _hours(float(r.delay_s)),
                         self.may_open(ctx.actor, int(r.hospital_id))))
        return Table("late", ("study_instance_uid", "accession_number", "hospital_code",
                              "exam_at", "received_at", "delay_h", "openable"), rows)

    @staticmethod
    def may_open(actor: Actor, hospital_id: int) -> bool:
        """Whether the late list may link the study for ``actor``: the link opens the
        workstation's viewer, which is for doctors (a hospital administrator is one), so
        a doctor of the study's hospital, or one who may read any patient's studies; the
        access policy decides again on opening."""
        if not actor.has(Role.DOCTOR) or not actor.can(Permission.READ_STUDY):
            return False
        return actor.can(Permission.READ_ANY_PATIENT) or actor.hospital_id == hospital_id

    def _volume(self, conn: Any, ctx: _Ctx) -> Table:
        rows = [(s["day"], s["modality"] or "-", int(s["studies"]), int(s["instances"]),
                 int(s["bytes"])) for s in self._studies(conn, ctx, ("day", "modality"))]
        return Table("volume", ("day", "modality", "studies", "instances", "bytes"), rows)

    def _volume_hospitals(self, conn: Any, ctx: _Ctx) -> Table:
        rows = []
        for s in self._studies(conn, ctx, ("hospital_id", "modality")):
            h = ctx.by_id.get(int(s["hospital_id"]))
            rows.append((h.code if h else "", h.name if h else "", s["modality"] or "-",
                         int(s["studies"]), int(s["instances"]), int(s["bytes"])))
        return Table("volume_hospitals", ("hospital_code", "hospital_name", "modality",
                                          "studies", "instances", "bytes"), rows)

    def _use(self, conn: Any, ctx: _Ctx) -> Table:
        rows = [(str(r.metric), round(float(r.count), 2))
                for r in self._use_rows(conn, ctx) if not str(r.metric).startswith(
                    ("recog_", "recoded_"))]
        return Table("use", ("metric", "count"), rows)

    def _pairs(self, conn: Any, ctx: _Ctx) -> Table:
        acc: dict[tuple[int, int, str], int] = defaultdict(int)
        for r in repo.pair_days(conn, ctx.first, ctx.yesterday, ctx.scope.hospital_ids):
            acc[(int(r.viewer_hospital_id), int(r.owner_hospital_id), str(r.mode))] += \
                int(r.views)
        ids = ctx.scope.hospital_ids
        for p in self._today_use(conn, ctx)[1]:
            v_, o_ = p["viewer_hospital_id"], p["owner_hospital_id"]
            if ids is None or v_ in ids or o_ in ids:
                acc[(v_, o_, p["mode"])] += int(p["views"])
        rows = []
        for (vid, oid, mode), views in sorted(acc.items(), key=lambda kv: -kv[1]):
            v, o = ctx.by_id.get(vid), ctx.by_id.get(oid)
            rows.append((v.code if v else "", v.name if v else "", o.code if o else "",
                         o.name if o else "", mode, views))
        return Table("pairs", ("viewer_code", "viewer_name", "owner_code", "owner_name",
                               "mode", "views"), rows)

    def _recognition(self, conn: Any, ctx: _Ctx) -> Table:
        rows = [(str(r.metric)[6:], round(float(r.count), 2)) for r in self._use_rows(conn, ctx)
                if str(r.metric).startswith("recog_")]
        return Table("recognition", ("metric", "value"), rows)

    def _storage(self, conn: Any, ctx: _Ctx) -> Table:
        months: dict[str, float] = defaultdict(float)
        for s in self._studies(conn, ctx, ("month",), first=repo.ALL_TIME):
            months[str(s["month"])] += s["bytes"]
        recent_first = (ctx.today - timedelta(days=90)).isoformat()
        last90 = sum(s["bytes"] for s in self._studies(conn, ctx, (), first=recent_first))
        total = sum(months.values())
        per_year = last90 / 90 * 365
        recoded = {str(r.metric): float(r.count) for r in repo.use_days(
            conn, repo.ALL_TIME, ctx.yesterday, ctx.scope.hospital_ids, ())
            if str(r.metric).startswith("recoded_")}
        before, after = recoded.get("recoded_bytes_before", 0), recoded.get(
            "recoded_bytes_after", 0)
        rows: list[tuple[Any, ...]] = [("summary", "bytes_stored", int(total)),
                                       ("summary", "bytes_per_year_last_90d", int(per_year)),
                                       ("summary", "compression_ratio",
                                        round(before / after, 3) if after else None)]
        for years in (5, 10, 30):
            rows.append(("projection", f"bytes_in_{years}_years", int(total + per_year * years)))
        cumulative = 0.0
        for month in sorted(months):
            cumulative += months[month]
            rows.append((month, "bytes_added", int(months[month])))
            rows.append((month, "bytes_cumulative", int(cumulative)))
        return Table("storage", ("period", "figure", "value"), rows)

    def _alerts(self, conn: Any, ctx: _Ctx) -> Table:
        rows = []
        for a in repo.alerts(conn, ctx.now - timedelta(days=ctx.days), ctx.scope.hospital_ids):
            h = ctx.by_id.get(int(a.hospital_id))
            rows.append((_aware(a.opened_at), h.code if h else "", h.name if h else "",
                         a.kind, a.day, float(a.value), a.notified))
        return Table("alerts", ("opened_at", "hospital_code", "hospital_name", "kind", "day",
                                "value", "notified"), rows)


@dataclass(frozen=True, slots=True)
class _Row:
    metric: str
    count: float


class _Ctx:
    """What the figures of one request share: scope, hospitals, the period, today's rows."""

    def __init__(self, actor: Actor, scope: Scope, hospitals: list[Any], now: datetime,
                 today: date, days: int, unit: int | None = None) -> None:
        self.actor = actor
        self.scope = scope
        self.unit = unit
        self.hospitals = hospitals
        self.by_id = {int(h.id): h for h in hospitals}
        ids = None if scope.hospital_ids is None else set(scope.hospital_ids)
        self.mine = [h for h in hospitals if h.active and (ids is None or h.id in ids)]
        self.now = now
        self.today = today
        self.days = days
        first = today - timedelta(days=days - 1)
        # 90 and 365 days start on the first of the month they fall in (whole months plus
        # this month so far): a year is then at most 13 month rows (this month's row holds
        # its days through yesterday) and today's live rows, whatever the day of the month.
        self.first = (first.replace(day=1) if days >= MONTH_ALIGNED else first).isoformat()
        self.yesterday = (today - timedelta(days=1)).isoformat()
        self.live: dict[str, list[Any]] | None = None

    def connected(self, hospital: Any, days: int) -> bool:
        last = _aware(hospital.last_received_at)
        return last is not None and last >= self.now - timedelta(days=days)


def names(values: Iterable[str]) -> list[str]:
    return [v for v in values if v in StatsService.TABLES]
