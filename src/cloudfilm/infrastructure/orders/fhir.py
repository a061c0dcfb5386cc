"""FHIR R4 ``ServiceRequest`` orders (an imaging order from the hospital's order entry).

The resource is checked with ``fhir.resources.R4B.servicerequest.ServiceRequest`` (R4B did
not change ServiceRequest's elements used here; already a dependency for reports), then
read:

- ``action``: ``status`` ``draft``/``active`` -> check; ``completed`` -> performed;
  ``revoked``/``entered-in-error`` -> cancel; ``on-hold``/``unknown`` are refused.
- ``order_ref``: the first ``identifier`` value, else ``requisition.value`` (required: a
  later "completed" is matched by it).
- the patient: ``subject.reference`` ``Patient/<the hospital's own patient ID>``, or
  ``subject.identifier``: with system ``urn:oid:2.16.156.10011.1.3`` (居民身份证号) the
  national ID, any other system the hospital's own ID.
- ``code.coding``: system ``urn:cloudfilm:recognition-item`` names a catalogue item; the
  first other code is the hospital's own procedure code.
- ``department``: ``requester.display`` (the ordering department or its role, e.g.
  呼吸内科; ServiceRequest has no department element of its own).
- ``performed_at``: ``occurrenceDateTime`` of a completed order, else now.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pydantic
from fhir.resources.R4B.servicerequest import ServiceRequest

from cloudfilm.infrastructure.orders.order import (
    ITEM_SYSTEM,
    NATIONAL_ID_SYSTEMS,
    Action,
    Order,
    OrderFormatError,
)

__all__ = ["read_service_request"]

_ROOT = "ServiceRequest"
_ACTIONS: dict[str, Action] = {"draft": "check", "active": "check", "completed": "performed",
                               "revoked": "cancel", "entered-in-error": "cancel"}


def read_service_request(body: bytes | str | dict[str, Any]) -> Order:
    """Read one ServiceRequest. Raises OrderFormatError naming the element."""
    if isinstance(body, dict):
        resource = body
    else:
        try:
            resource = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise OrderFormatError(_ROOT, f"the body is not JSON: {exc}") from None
    if not isinstance(resource, dict) or resource.get("resourceType") != _ROOT:
        raise OrderFormatError(f"{_ROOT}.resourceType", "send a ServiceRequest resource")
    try:
        ServiceRequest.model_validate(resource)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        path = _ROOT + "".join(f"[{p}]" if isinstance(p, int) else f".{p}"
                               for p in first["loc"] if not str(p).startswith("function"))
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise OrderFormatError(path, f"{first['msg']}{more}") from None
    status = str(resource.get("status", ""))
    action = _ACTIONS.get(status)
    if action is None:
        raise OrderFormatError(f"{_ROOT}.status", f"status {status!r} is not handled; send "
                                                  "active, completed or revoked")
    ref = next((str(i["value"]) for i in resource.get("identifier") or []
                if isinstance(i, dict) and i.get("value")), "")
    ref = ref or str((resource.get("requisition") or {}).get("value") or "")
    if not ref:
        raise OrderFormatError(f"{_ROOT}.identifier", "give the order number (identifier "
                                                      "or requisition)")
    patient_id, national_id = _subject(resource.get("subject") or {})
    item = proc = ""
    for coding in (resource.get("code") or {}).get("coding") or []:
        if coding.get("system") == ITEM_SYSTEM and coding.get("code"):
            item = str(coding["code"])
        elif coding.get("code") and not proc:
            proc = str(coding["code"])
    if action == "check" and not (item or proc):
        raise OrderFormatError(f"{_ROOT}.code", "the ordered exam (code.coding) is missing")
    at = None
    if action == "performed" and resource.get("occurrenceDateTime"):
        try:
            at = datetime.fromisoformat(str(resource["occurrenceDateTime"]))
        except ValueError:
            raise OrderFormatError(f"{_ROOT}.occurrenceDateTime", "not a dateTime") from None
    department = str((resource.get("requester") or {}).get("display") or "")
    return Order(action, ref[:64], patient_id=patient_id[:64], national_id=national_id[:32],
                 item_code=item[:32], procedure_code=proc[:64], department=department[:128],
                 performed_at=at)


def _subject(subject: dict[str, Any]) -> tuple[str, str]:
    """(the hospital's own patient ID, national ID) of ``subject``."""
    reference = str(subject.get("reference") or "")
    if reference.startswith("Patient/") and len(reference) > len("Patient/"):
        return reference[len("Patient/"):], ""
    identifier = subject.get("identifier") or {}
    value = str(identifier.get("value") or "")
    if value:
        if identifier.get("system") in NATIONAL_ID_SYSTEMS:
            return "", value
        return value, ""
    raise OrderFormatError(f"{_ROOT}.subject", "name the patient: Patient/<ID> or an "
                                               "identifier")
