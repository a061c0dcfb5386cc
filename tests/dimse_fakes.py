"""Small DIMSE stand-ins shared by the unit tests of ``interfaces/dimse``: a C-STORE
primitive with chosen fields, and the two attributes of an association that pynetdicom's
message decoding reads."""

from __future__ import annotations

import queue
from typing import Any, ClassVar

from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.dimse_primitives import C_STORE

CT = "1.2.840.10008.5.1.4.1.1.2"


def store_primitive(*, message_id: int = 3, sop_instance: str = "1.2.3.4",
                    priority: int = 0, **values: Any) -> C_STORE:
    """A C-STORE request of a CT object; other fields (e.g. ``Status`` and
    ``MessageIDBeingRespondedTo`` for a response) are set from ``values``."""
    primitive = C_STORE()
    primitive.MessageID = message_id
    primitive.AffectedSOPClassUID = CT
    primitive.AffectedSOPInstanceUID = sop_instance
    primitive.Priority = priority
    for keyword, value in values.items():
        setattr(primitive, keyword, value)
    return primitive


class FakeContext:
    """An accepted presentation context: only its transfer syntax is read."""

    transfer_syntax: ClassVar[list[str]] = [ExplicitVRLittleEndian]


class FakeDimse:
    def __init__(self) -> None:
        self.message: Any = None
        self.msg_queue: queue.Queue[Any] = queue.Queue()


class FakeAssoc:
    """An association with context 1 accepted and a DIMSE provider's message slot and
    queue, as message decoding and the C-STORE receiver use them."""

    _accepted_cx: ClassVar[dict[int, FakeContext]] = {1: FakeContext()}

    def __init__(self) -> None:
        self.dimse = FakeDimse()
