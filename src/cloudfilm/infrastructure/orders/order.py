"""What the order feed says, whatever its form."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Action = Literal["check", "performed", "cancel"]
# A coding of this system (FHIR) or coding-system name (HL7 OBR-4.3) names a catalogue item
# itself; any other code is the hospital's own procedure code (its code map).
ITEM_SYSTEM = "urn:cloudfilm:recognition-item"
ITEM_SYSTEM_HL7 = "CFITEM"
# 居民身份证号 (the resident identity card number): GB/T 2260-based OID used by Chinese HIS.
NATIONAL_ID_SYSTEMS = frozenset({"urn:oid:2.16.156.10011.1.3", "urn:cloudfilm:national-id"})


class OrderFormatError(ValueError):
    """An order message is malformed; ``field`` names where (``ORC-1``,
    ``ServiceRequest.subject``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Order:
    """One order: ``check`` (a new order: run the recognition check), ``performed`` (the
    exam of an earlier order was done), ``cancel`` (nothing to record)."""

    action: Action
    order_ref: str
    patient_id: str = ""
    national_id: str = ""
    item_code: str = ""
    procedure_code: str = ""
    department: str = ""
    performed_at: datetime | None = None
    warnings: tuple[str, ...] = field(default=())
