"""DICOM dates and times (DA, TM, DT) to Python dates and datetimes.

DA and TM carry no time zone (PS3.5 6.2): they are the local time of the sender, which in
one province is one zone, so the caller says which. Old modalities still write the
ACR-NEMA forms ``YYYY.MM.DD`` and ``HH:MM:SS``; partial times (``HH``, ``HHMM``) are valid.
Every parser returns None for a value it cannot read, never raises.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo

_DA_RE = re.compile(r"(\d{4})(\d{2})(\d{2})")
_TM_RE = re.compile(r"(\d{2})(\d{2})?(\d{2})?(?:\.(\d*))?")
_DT_RE = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d*))?([+-]\d{4})?")
_OFFSET_RE = re.compile(r"([+-])(\d{2})(\d{2})")


def parse_da(value: str) -> date | None:
    match = _DA_RE.fullmatch((value or "").strip().replace(".", "").replace("-", ""))
    if match is None:
        return None
    try:
        return date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    except ValueError:  # 20241332
        return None


def parse_tm(value: str) -> time | None:
    match = _TM_RE.fullmatch((value or "").strip().replace(":", ""))
    if match is None:
        return None
    hour, minute, second, fraction = match.groups()
    try:
        return time(int(hour), int(minute or 0), min(int(second or 0), 59),  # leap second 60
                    _microseconds(fraction))
    except ValueError:  # 25:00
        return None


def parse_offset(value: str) -> timezone | None:
    """A ``+HHMM``/``-HHMM`` UTC offset (DT suffix, Timezone Offset From UTC)."""
    match = _OFFSET_RE.fullmatch((value or "").strip())
    if match is None:
        return None
    sign = -1 if match.group(1) == "-" else 1
    hours, minutes = int(match.group(2)), int(match.group(3))
    if hours > 14 or minutes >= 60:
        return None
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def parse_dt(value: str, zone: tzinfo | None = None) -> datetime | None:
    """A DT value; its own offset wins over ``zone`` (PS3.3 C.12.1). A bad offset makes
    the whole value unreadable (None)."""
    match = _DT_RE.fullmatch((value or "").strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    if offset:
        zone = parse_offset(offset)
        if zone is None:
            return None
    try:
        return datetime(int(year), int(month or 1), int(day or 1), int(hour or 0),
                        int(minute or 0), min(int(second or 0), 59), _microseconds(fraction),
                        tzinfo=zone)
    except ValueError:
        return None


def local_datetime(date_value: str, time_value: str = "") -> datetime | None:
    """DA + TM as a naive datetime (midnight when the time is missing or unreadable); None
    when the date is missing or not a date."""
    day = parse_da(date_value)
    if day is None:
        return None
    return datetime.combine(day, parse_tm(time_value) or time())


def exam_time(date_value: str, time_value: str, zone: tzinfo) -> datetime | None:
    """The moment a DA/TM pair names in ``zone``, in UTC."""
    local = local_datetime(date_value, time_value)
    return local.replace(tzinfo=zone).astimezone(UTC) if local is not None else None


def _microseconds(fraction: str | None) -> int:
    return int(fraction[:6].ljust(6, "0")) if fraction else 0
