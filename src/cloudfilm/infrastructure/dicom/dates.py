"""DICOM dates and times (DA, TM) to Python datetimes.

DA and TM carry no time zone (PS3.5 6.2): they are the local time of the sender, which in
one province is one zone, so the caller says which.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo


def local_datetime(date: str, time: str = "") -> datetime | None:
    """``YYYYMMDD`` + ``HHMMSS.FFFFFF`` (any precision, or the old ``HH:MM:SS``) as a naive
    datetime; None when the date is missing or not a date."""
    date = (date or "").strip().replace(".", "").replace("-", "")[:8]
    if len(date) != 8 or not date.isdigit():
        return None
    whole, _, fraction = (time or "").strip().replace(":", "").partition(".")
    if not whole.isdigit() or len(whole) % 2 or len(whole) > 6:
        whole = ""
    whole = (whole + "000000")[:6]
    micro = (fraction + "000000")[:6] if fraction.isdigit() else "000000"
    try:
        return datetime.strptime(date + whole + micro, "%Y%m%d%H%M%S%f")
    except ValueError:  # 20241332, 25:00...
        return None


def exam_time(date: str, time: str, zone: tzinfo) -> datetime | None:
    """The moment a DA/TM pair names in ``zone``, in UTC."""
    local = local_datetime(date, time)
    return local.replace(tzinfo=zone).astimezone(UTC) if local is not None else None
