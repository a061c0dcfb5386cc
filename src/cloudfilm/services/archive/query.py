"""Search the archive (QIDO-RS and C-FIND share this): parameters in, DICOM JSON out.

Matching follows PS3.4 C.2.2.2: single value, wildcard (``*``, ``?``), range (dates and
times), list of UIDs, universal (empty value). Person names match case-insensitively on
whole name components (family, given, ideographic, phonetic, or the whole group), so
``王小东``, ``Wang`` and ``xiao*`` all find ``Wang^XiaoDong=王^小东``; ``fuzzymatching``
turns that into substring matching.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from cloudfilm.infrastructure.db import query_repository as qr
from cloudfilm.infrastructure.db.query_repository import Condition
from cloudfilm.infrastructure.db.session import Database, DatabaseUnavailableError
from cloudfilm.services.access.audit import AuditService, per_resident
from cloudfilm.services.access.policy import AccessPolicy
from cloudfilm.services.archive.ingest import BULK_BASE
from cloudfilm.services.errors import InvalidQueryError, ResourceUnavailableError
from cloudfilm.services.kernel.actor import Actor

Level = Literal["study", "series", "instance"]

_CONTROL = frozenset({"includefield", "limit", "offset", "fuzzymatching", "orderby"})
_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")


@dataclass(frozen=True, slots=True)
class SearchRequest:
    level: Level
    conditions: tuple[Condition, ...] = ()
    include_all: bool = False
    include_fields: frozenset[str] = field(default_factory=frozenset)
    limit: int = 1000
    offset: int = 0


@dataclass(frozen=True, slots=True)
class SearchResult:
    matches: list[dict[str, Any]]
    truncated: bool


def parse_search(
    level: Level,
    params: Iterable[tuple[str, str]],
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    max_results: int = 10_000,
) -> SearchRequest:
    """Turn QIDO-RS query parameters into a :class:`SearchRequest`.

    Raises
    ------
    InvalidQueryError
        Unknown attribute, malformed value, bad limit/offset. The message names the parameter.

    References
    ----------
    PS3.18 8.3.4 (query parameters), PS3.4 C.2.2.2 (matching).
    """
    allowed = _allowed_keys(level, nested=study_uid is not None)
    conditions: list[Condition] = []
    include: set[str] = set()
    include_all = False
    limit = max_results
    offset = 0
    fuzzy = False
    pending: list[tuple[str, str]] = []
    for raw_key, value in params:
        if "\x00" in raw_key or "\x00" in value:
            # No DICOM text holds NUL, and PostgreSQL refuses it in a text parameter (a 500
            # found by tests/integration/fuzz).
            raise InvalidQueryError(f"query parameter {raw_key[:64]!r} contains a NUL character")
        key = raw_key.strip()
        if key == "includefield":
            for item in value.split(","):
                item = item.strip()
                if item == "all":
                    include_all = True
                elif item:
                    include.add(_keyword(item, "includefield"))
        elif key == "limit":
            limit = min(_non_negative(key, value), max_results)
        elif key == "offset":
            # Past 2^31 nothing matches anyway; SQLite cannot bind more than 2^63 (a 500).
            offset = min(_non_negative(key, value), _INT_MAX)
        elif key == "fuzzymatching":
            fuzzy = value.strip().lower() == "true"
        elif key in _CONTROL:
            continue
        else:
            pending.append((_keyword(key, "query parameter"), value))
    for keyword, value in pending:
        if keyword not in allowed:
            raise InvalidQueryError(
                f"{keyword} cannot be matched at the {level} level; "
                f"matching keys here are: {', '.join(sorted(allowed))}"
            )
        if value == "":
            include.add(keyword)  # universal matching: return the attribute
            continue
        conditions.append(_condition(keyword, value, fuzzy=fuzzy))
    if study_uid is not None:
        conditions.append(Condition("StudyInstanceUID", "exact", study_uid))
    if series_uid is not None:
        conditions.append(Condition("SeriesInstanceUID", "exact", series_uid))
    return SearchRequest(level, tuple(conditions), include_all, frozenset(include), limit, offset)


class QueryService:
    """Searches, restricted by the access policy and recorded in the audit trail.

    Parameters
    ----------
    db
        The index.
    policy
        Builds the SQL restriction for the actor (``AccessPolicy.filter``).
    audit
        Records each search (one record) before the matches are returned.
    """

    def __init__(self, db: Database, policy: AccessPolicy, audit: AuditService) -> None:
        self._db = db
        self._policy = policy
        self._audit = audit

    def search(self, request: SearchRequest, *, actor: Actor) -> SearchResult:
        """Run a search as ``actor``; rows come back in a stable order (newest study first).

        Only studies the actor may see match: the policy's restriction is part of the
        statement, so ``limit``/``offset`` page through visible rows. The search is recorded
        (and committed) before this returns; if the record fails, so does the search.

        Raises
        ------
        ResourceUnavailableError
            The index or the audit trail cannot be written or read.
        """
        for attempt in (1, 2):
            try:
                return self._search(request, actor=actor)
            except DatabaseUnavailableError as exc:
                # A dead pooled connection (the server restarted): nothing was committed
                # (the audit write reports its own failures), so run it once more.
                if exc.disconnected and attempt == 1:
                    continue
                raise ResourceUnavailableError(str(exc)) from exc
        raise AssertionError("unreachable")

    def _search(self, request: SearchRequest, *, actor: Actor) -> SearchResult:
        with self._db.auditing_read() as session:
            visible = self._policy.filter(session, actor)
            fetch = request.limit + 1
            if request.level == "study":
                rows = qr.search_studies(session, request.conditions, limit=fetch,
                                         offset=request.offset, visible=visible)
                # Modalities and owners come with the rows (one statement).
                matches = [_study_json(r, qr.split_modalities(r.modalities))
                           for r in rows[: request.limit]]
                linked: dict[str, int | None] = {
                    r.study_instance_uid: r.resident_id for r in rows[: request.limit]}
            elif request.level == "series":
                rows = qr.search_series(session, request.conditions, limit=fetch,
                                        offset=request.offset, visible=visible)
                matches = [_series_json(r, r.study_instance_uid)
                           for r in rows[: request.limit]]
            else:
                extra = request.include_all or bool(request.include_fields - _INSTANCE_COLS)
                rows = qr.search_instances(session, request.conditions, limit=fetch,
                                           offset=request.offset, with_metadata=extra,
                                           visible=visible)
                matches = [_instance_json(r, request) for r in rows[: request.limit]]
            studies = sorted({m["0020000D"]["Value"][0] for m in matches})
            # Whoever asked (own hospital included), every resident whose data is in
            # the answer finds the search in "who looked at my data": one record that
            # names them all (``per_resident``).
            if request.level != "study":
                linked = self._audit.study_owners(session, studies)
            owners = {uid: linked.get(uid) for uid in studies}
            self._audit.write(conn=session, entries=per_resident(
                actor, "search", request.level, _searched_uid(request), owners,
                key="studies", reason=actor.kind,
                detail={"matches": len(matches), "offset": request.offset,
                        "keys": sorted({c.keyword for c in request.conditions})}))
        return SearchResult(matches=matches, truncated=len(rows) > request.limit)


def _searched_uid(request: SearchRequest) -> str:
    for cond in request.conditions:
        if cond.keyword == "StudyInstanceUID" and cond.kind == "exact":
            return str(cond.value)[:64]
    return ""


def _allowed_keys(level: Level, *, nested: bool) -> frozenset[str]:
    # Searching series or instances across studies may also match on study attributes
    # (PS3.18 10.6.1.2); nested searches match their own level.
    if level == "study":
        return qr.STUDY_KEYS
    if level == "series":
        return qr.SERIES_KEYS | qr.STUDY_KEYS
    if level == "instance":
        return qr.INSTANCE_KEYS | qr.SERIES_KEYS | qr.STUDY_KEYS
    # A caller's bug (say "STUDY" from a C-FIND identifier), not a client's: never widen it
    # silently into an instance search.
    raise ValueError(f"unknown search level {level!r}; expected study, series or instance")


def _keyword(key: str, what: str) -> str:
    if re.fullmatch(r"[0-9A-Fa-f]{8}", key):
        keyword = keyword_for_tag(int(key, 16))
        if keyword:
            return keyword
    elif tag_for_keyword(key) is not None:
        return key
    raise InvalidQueryError(f"unknown attribute {key!r} in {what}; use a DICOM keyword "
                            "(PatientID) or an 8-digit hex tag (00100020)")


_INT_MIN, _INT_MAX, _UINT_MAX = -(2**31), 2**31 - 1, 2**32 - 1


def _non_negative(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise InvalidQueryError(f"{name} must be a whole number >= 0, got {value!r}")
    return number


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _condition(keyword: str, value: str, *, fuzzy: bool) -> Condition:
    vr = dictionary_VR(keyword)
    if keyword == "PatientName":
        return _name_condition(value, fuzzy=fuzzy)
    if vr == "UI":
        uids = [u.strip() for u in re.split(r"[\\,]", value) if u.strip()]
        return Condition(keyword, "list", uids) if len(uids) > 1 else Condition(
            keyword, "exact", uids[0] if uids else "")
    if vr in ("DA", "TM", "DT"):
        return _range_condition(keyword, vr, value)
    if vr in ("IS", "US", "UL", "SL", "SS"):
        try:
            number = int(value)
        except ValueError:
            raise InvalidQueryError(f"{keyword} must be an integer, got {value!r}") from None
        # IS/SL reach down to -2^31, UL up to 2^32-1 (PS3.5 Table 6.2-1); beyond that the
        # index cannot even hold the value (SQLite raised OverflowError: a 500).
        if not _INT_MIN <= number <= _UINT_MAX:
            raise InvalidQueryError(f"{keyword} {value!r} is outside the range of its VR {vr}")
        return Condition(keyword, "exact", number)
    if keyword == "ModalitiesInStudy" and ("\\" in value or "," in value):
        return Condition(keyword, "list", [v.strip() for v in re.split(r"[\\,]", value)])
    if "*" in value or "?" in value:
        return Condition(keyword, "wildcard", _like(value))
    if fuzzy and dictionary_VR(keyword) == "PN":
        return Condition(keyword, "contains", _like(value.upper()))
    return Condition(keyword, "exact", value)


def _name_condition(value: str, *, fuzzy: bool) -> Condition:
    words = [w for w in re.split(r"[\^= ]+", value.upper()) if w]
    if not words:
        return Condition("PatientName", "wildcard", "%")
    if fuzzy:
        return Condition("PatientName", "contains", _like(" ".join(words)).replace(" ", "%"))
    return Condition("PatientName", "words", [_like(w) for w in words])


def _range_condition(keyword: str, vr: str, value: str) -> Condition:
    check = _DATE if vr == "DA" else _TIME if vr == "TM" else re.compile(r"^\d{4,14}")
    if "-" in value:
        low, _, high = value.partition("-")
        for part in (low, high):
            if part and not check.match(part):
                raise InvalidQueryError(f"{keyword} range {value!r} is not {vr} values "
                                        "(dates are YYYYMMDD, e.g. 20240101-20241231)")
        if vr == "TM" and high:
            high = high + "9" * (6 - len(high.split(".")[0]))
        if vr == "DA" and high:
            high = high
        return Condition(keyword, "range", (low, high))
    if not check.match(value):
        raise InvalidQueryError(f"{keyword} value {value!r} is not a {vr} (dates are YYYYMMDD)")
    if vr == "TM":
        return Condition(keyword, "wildcard", _like(value) + "%")
    return Condition(keyword, "exact", value)


def _retrieve_url(*parts: str) -> dict[str, Any]:
    return {"vr": "UR", "Value": [BULK_BASE + "".join(parts)]}


def _study_json(study: Any, modalities: list[str]) -> dict[str, Any]:
    attrs: dict[str, Any] = orjson.loads(study.attributes_json)
    attrs["0020000D"] = {"vr": "UI", "Value": [study.study_instance_uid]}
    if modalities:
        attrs["00080061"] = {"vr": "CS", "Value": modalities}
    attrs["00201206"] = {"vr": "IS", "Value": [study.num_series]}
    attrs["00201208"] = {"vr": "IS", "Value": [study.num_instances]}
    attrs["00080056"] = {"vr": "CS", "Value": ["ONLINE"]}
    attrs["00081190"] = _retrieve_url("/studies/", study.study_instance_uid)
    return attrs


def _series_json(series: Any, study_uid: str) -> dict[str, Any]:
    attrs: dict[str, Any] = orjson.loads(series.attributes_json)
    attrs["0020000D"] = {"vr": "UI", "Value": [study_uid]}
    attrs["0020000E"] = {"vr": "UI", "Value": [series.series_instance_uid]}
    attrs["00201209"] = {"vr": "IS", "Value": [series.num_instances]}
    attrs["00080056"] = {"vr": "CS", "Value": ["ONLINE"]}
    attrs["00081190"] = _retrieve_url(
        "/studies/", study_uid, "/series/", series.series_instance_uid)
    return attrs


_INSTANCE_COLS = frozenset({
    "SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns", "NumberOfFrames",
    "StudyInstanceUID", "SeriesInstanceUID", "Modality",
})  # fmt: skip


def _instance_json(row: Any, request: SearchRequest) -> dict[str, Any]:
    # Plain tuple unpacking: named access on SQLAlchemy rows cost ~30 us per row here,
    # most of the time of a 300-instance search.
    (_, sop_uid, sop_class, number, frames, rows, columns, syntax, series_uid, modality,
     study_uid, *rest) = tuple(row)
    attrs: dict[str, Any] = {}
    if rest:
        full: dict[str, Any] = orjson.loads(rest[0])
        if request.include_all:
            attrs = {k: v for k, v in full.items() if "BulkDataURI" not in v}
        else:
            wanted = {f"{tag_for_keyword(k):08X}" for k in request.include_fields}
            attrs = {k: v for k, v in full.items() if k in wanted}
    attrs["00080016"] = {"vr": "UI", "Value": [sop_class]}
    attrs["00080018"] = {"vr": "UI", "Value": [sop_uid]}
    attrs["0020000D"] = {"vr": "UI", "Value": [study_uid]}
    attrs["0020000E"] = {"vr": "UI", "Value": [series_uid]}
    if modality:
        attrs["00080060"] = {"vr": "CS", "Value": [modality]}
    if number is not None:
        attrs["00200013"] = {"vr": "IS", "Value": [number]}
    if rows is not None:
        attrs["00280010"] = {"vr": "US", "Value": [rows]}
    if columns is not None:
        attrs["00280011"] = {"vr": "US", "Value": [columns]}
    if frames is not None:
        attrs["00280008"] = {"vr": "IS", "Value": [frames]}
    attrs["00083002"] = {"vr": "UI", "Value": [syntax]}
    attrs["00080056"] = _ONLINE
    attrs["00081190"] = {"vr": "UR", "Value": [
        f"{BULK_BASE}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"]}
    return attrs


_ONLINE = {"vr": "CS", "Value": ["ONLINE"]}
