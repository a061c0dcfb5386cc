"""HL7 v2 orders: ORM^O01 (v2.3-2.5) and OMG^O19 (v2.5+), and their application
acknowledgement (ORR^O02 / ORG^O20) carrying the recognition prompt.

Decoding, parsing and unescaping are the report reader's (``infrastructure.reports.hl7v2``:
MSH-18 character sets, GBK sent as UTF-8, MLLP framing, python-hl7 for the segments).

Mapping (one :class:`Order` per ORC; the OBR after it belongs to it)
---------------------------------------------------------------------
- ``action``: ORC-1 ``NW`` (new order) -> check; ``SC`` (status changed) or ``XO`` with ORC-5
  ``CM`` (completed) or ``A`` (some results) -> performed; ``CA``/``OC``/``DC`` (cancelled,
  discontinued) -> cancel. Anything else is refused with the code in the text.
- ``order_ref``: ORC-2.1 (placer order number), else OBR-2.1 (required).
- ``patient_id``: PID-3 first repetition, component 1 (the hospital's own ID; required).
- ``item_code`` / ``procedure_code``: OBR-4 (Universal Service Identifier, CE/CWE:
  ``code^text^system``): coding system ``CFITEM`` names a catalogue item, anything else is
  the hospital's own procedure code.
- ``department``: ORC-17 (entering organization) text, else its code, else PV1-10.
- ``performed_at``: ORC-9 (date/time of the transaction), else none (now).

Answer: ``MSH`` (sender and receiver swapped), ``MSA`` (``AA``, or ``AE``/``AR`` with the
reason), then per order one ``NTE`` with the prompt in words (Chinese, then English) and
``ZRC`` segments, one per prior (``ZRC|<n>|<decision id>|<order ref>|<item code>|<study
UID>|<study date>|<days ago>|<hospital code>^<hospital name>|<hospital level>|<report
status>``; with no prior a single ``ZRC`` up to the item code, so the decision id reaches
the HIS either way). ``Z`` segments are the standard's place for site-defined content.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import hl7

from cloudfilm.infrastructure.orders.order import (
    ITEM_SYSTEM,
    ITEM_SYSTEM_HL7,
    Action,
    Order,
    OrderFormatError,
)
from cloudfilm.infrastructure.reports import hl7v2 as er7
from cloudfilm.infrastructure.reports.document import ReportFormatError

__all__ = ["ORDER_TYPES", "Prompt", "answer", "is_order", "read_orders"]

ORDER_TYPES = {("ORM", "O01"): ("ORR", "O02"), ("OMG", "O19"): ("ORG", "O20")}
_CHECK = frozenset({"NW"})
_STATUS = frozenset({"SC", "XO"})
_DONE = frozenset({"CM", "A"})
_CANCEL = frozenset({"CA", "OC", "DC", "OD"})


@dataclass(frozen=True, slots=True)
class Prompt:
    """What the answer says about one order (plain data from the check's result)."""

    order_ref: str
    decision_id: str
    item_code: str
    text: str
    priors: Sequence[tuple[str, str, int, str, str, str, str]] = ()
    """(study UID, study date, days ago, hospital code, hospital name, level, report)"""


def _message_type(message: bytes | str) -> tuple[str, str]:
    try:
        msg = er7._msh_only(message)
    except ReportFormatError:
        return "", ""
    msh = msg.parsed.segment("MSH")
    return msg.value(msh, 9, 1), msg.value(msh, 9, 2)


def is_order(message: bytes | str) -> bool:
    """Whether the message is an order (ORM^O01, OMG^O19): the HL7 door's dispatch."""
    return _message_type(message) in ORDER_TYPES


def read_orders(message: bytes | str) -> list[Order]:
    """The orders of an ORM^O01 or OMG^O19 message. Raises OrderFormatError."""
    try:
        warnings: list[str] = []
        text, codec = er7._decode(message, warnings)
        lines = er7._lines(text)
        parsed = er7._parse(lines)
    except ReportFormatError as exc:
        raise OrderFormatError(exc.field, exc.message) from None
    msg = er7._Message(parsed, lines, er7._separators(parsed), codec, warnings)
    msh = parsed.segment("MSH")
    kind = (msg.value(msh, 9, 1), msg.value(msh, 9, 2))
    if kind not in ORDER_TYPES:
        raise OrderFormatError("MSH-9", f"message type {msg.raw(msh, 9) or 'empty'} is not "
                                        "an order (ORM^O01 or OMG^O19)")
    pid: hl7.Segment | None = None
    pv1: hl7.Segment | None = None
    groups: list[tuple[hl7.Segment, hl7.Segment | None]] = []
    for segment in parsed:
        name = str(segment[0])
        if name == "PID":
            pid = segment
        elif name == "PV1":
            pv1 = segment
        elif name == "ORC":
            groups.append((segment, None))
        elif name == "OBR" and groups and groups[-1][1] is None:
            groups[-1] = (groups[-1][0], segment)
    if not groups:
        raise OrderFormatError("ORC", "the message has no ORC segment, so no order")
    if pid is None or not msg.value(pid, 3):
        raise OrderFormatError("PID-3", "the patient ID (PID-3, first repetition, "
                                        "component 1) is missing")
    return [_order(msg, n, orc, obr, pid, pv1, tuple(warnings))
            for n, (orc, obr) in enumerate(groups, 1)]


def _order(msg: er7._Message, n: int, orc: hl7.Segment, obr: hl7.Segment | None,
           pid: hl7.Segment, pv1: hl7.Segment | None, warnings: tuple[str, ...]) -> Order:
    control = msg.value(orc, 1).upper()
    status = msg.value(orc, 5).upper()
    action: Action
    if control in _CHECK:
        action = "check"
    elif control in _STATUS and status in _DONE:
        action = "performed"
    elif control in _CANCEL or (control in _STATUS and status in ("CA", "DC")):
        action = "cancel"
    else:
        raise OrderFormatError("ORC-1", f"ORC #{n}: order control {control or 'empty'!r} "
                                        f"(status {status or 'empty'!r}) is not handled; send "
                                        "NW, SC with ORC-5 CM, or CA")
    ref = msg.value(orc, 2) or (msg.value(obr, 2) if obr is not None else "")
    if not ref:
        raise OrderFormatError("ORC-2", f"ORC #{n} has no placer order number (ORC-2 or "
                                        "OBR-2): the later 'performed' is matched by it")
    item = proc = ""
    if obr is not None:
        code, system = msg.value(obr, 4, 1), msg.value(obr, 4, 3)
        if system.upper() in (ITEM_SYSTEM_HL7, ITEM_SYSTEM.upper()):
            item = code
        else:
            proc = code
    if action == "check" and not (item or proc):
        raise OrderFormatError("OBR-4", f"ORC #{n}: the ordered exam (OBR-4 universal "
                                        "service identifier) is missing")
    department = msg.value(orc, 17, 2) or msg.value(orc, 17, 1)
    if not department and pv1 is not None:
        department = msg.value(pv1, 10)
    at = None
    if stamp := msg.value(orc, 9):
        try:
            at = er7._time(stamp, "ORC-9", cast(Any, _Number(n)), [])
        except ReportFormatError as exc:
            raise OrderFormatError(exc.field, exc.message) from None
    return Order(action, ref[:64], patient_id=msg.value(pid, 3)[:64], item_code=item[:32],
                 procedure_code=proc[:64], department=department[:128], performed_at=at,
                 warnings=warnings)


@dataclass(frozen=True)
class _Number:
    """What the report reader's time parser names in its messages (``OBR #n``)."""

    number: int


def answer(message: bytes | str, code: str, *, text: str = "",
           prompts: Sequence[Prompt] = ()) -> str:
    """The application acknowledgement (ORR^O02 or ORG^O20; ACK when the type is not an
    order) of ``message``: MSA ``code`` with ``text``, and each prompt's NTE and ZRC."""
    msg = er7._msh_only(message)
    msh = msg.parsed.segment("MSH")
    control_id = msg.raw(msh, 10)
    if not control_id:
        raise OrderFormatError("MSH-10", "the message has no control id to acknowledge")
    seps = msg.separators
    kind = ORDER_TYPES.get((msg.value(msh, 9, 1), msg.value(msh, 9, 2)), ("ACK", ""))
    structure = f"{kind[0]}_{kind[1]}" if kind[1] else "ACK"
    now = datetime.now().astimezone().strftime("%Y%m%d%H%M%S%z")
    fields = ["MSH", msg.raw(msh, 2), *(msg.raw(msh, n) for n in (5, 6, 3, 4))]
    fields += [now, "", seps.component.join(p for p in (*kind, structure) if p),
               uuid.uuid4().hex[:20], msg.raw(msh, 11) or "P", msg.raw(msh, 12) or "2.5"]
    if charset := msg.raw(msh, 18):
        fields += ["", "", "", "", "", charset]

    def esc(value: object) -> str:
        return er7._escape(str(value), seps)

    lines = [seps.field.join(fields),
             seps.field.join(["MSA", code, control_id, *([esc(text)] if text else [])])]
    for p in prompts:
        lines.append(seps.field.join(["NTE", str(len(lines) - 1), "L", esc(p.text)]))
        head = [esc(p.decision_id), esc(p.order_ref), esc(p.item_code)]
        if not p.priors:
            lines.append(seps.field.join(["ZRC", "1", *head]))
        for i, (uid, day, ago, hcode, hname, level, report) in enumerate(p.priors, 1):
            lines.append(seps.field.join([
                "ZRC", str(i), *head, esc(uid), esc(day), str(ago),
                f"{esc(hcode)}{seps.component}{esc(hname)}", esc(level), esc(report)]))
    return "\r".join(lines) + "\r"
