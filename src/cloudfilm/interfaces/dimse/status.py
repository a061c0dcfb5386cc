"""Service errors to DIMSE status codes: the one mapping for C-STORE, C-FIND, C-MOVE, C-GET.

STOW-RS reuses :func:`store_failure_status` for its FailureReason (PS3.18 10.5.3). Every
code returned here is a key of the matching ``pynetdicom.status.*_SERVICE_CLASS_STATUS``
dictionary (a test checks it): C-MOVE/C-GET have no 0xA700, they use 0xA701/0xA702.
"""

from __future__ import annotations

from cloudfilm.services.errors import (
    CloudfilmError,
    InstanceConflictError,
    InvalidInstanceError,
    InvalidQueryError,
    NotAuthorizedError,
    ResourceUnavailableError,
    UnknownDestinationError,
    UnsupportedSOPClassError,
)

SUCCESS = 0x0000
# C-STORE Warning "coercion of data elements" (PS3.4 B.2.3): also what an object held for
# reconciliation is answered with (stored; its identifying attributes are to be settled).
HELD_WARNING = 0xB000
PROCESSING_FAILURE = 0x0110
SOP_CLASS_NOT_SUPPORTED = 0x0122
NOT_AUTHORIZED = 0x0124
OUT_OF_RESOURCES = 0xA700
DATASET_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
STORE_HANDLER_FAILED = 0xC211
FIND_HANDLER_FAILED = 0xC311
QR_IDENTIFIER_INVALID = 0xA900
MOVE_UNKNOWN_DESTINATION = 0xA801
QR_OUT_OF_RESOURCES = 0xA700
# PS3.4 C.4.2.1.5 / C.4.3.1.4: out of resources, unable to calculate number of matches.
RETRIEVE_OUT_OF_RESOURCES = 0xA701
# pynetdicom's "exception in the handler" codes for C-MOVE and C-GET.
MOVE_HANDLER_FAILED = 0xC511
GET_HANDLER_FAILED = 0xC611
CANCEL = 0xFE00
PENDING = 0xFF00
# The longest ErrorComment (0000,0902) LO allows (PS3.7 Annex C).
ERROR_COMMENT_MAX = 64


def store_failure_status(exc: BaseException) -> int:
    """C-STORE status (and STOW-RS FailureReason) for an ingest failure (PS3.4 B.2.3)."""
    if isinstance(exc, UnsupportedSOPClassError):
        return SOP_CLASS_NOT_SUPPORTED
    if isinstance(exc, NotAuthorizedError):
        return NOT_AUTHORIZED
    if isinstance(exc, ResourceUnavailableError):
        return OUT_OF_RESOURCES
    if isinstance(exc, InvalidInstanceError):
        # A report object whose content tree is malformed is a data set that does not
        # match its (SR, Encapsulated PDF) SOP class.
        return (DATASET_MISMATCH if exc.code in ("study-mismatch", "invalid-report")
                else CANNOT_UNDERSTAND)
    if isinstance(exc, InstanceConflictError):
        return PROCESSING_FAILURE
    if isinstance(exc, CloudfilmError):
        return PROCESSING_FAILURE
    return STORE_HANDLER_FAILED


def query_failure_status(exc: BaseException) -> int:
    """C-FIND/C-MOVE/C-GET status for a failure (PS3.4 C.4)."""
    if isinstance(exc, InvalidQueryError):
        return QR_IDENTIFIER_INVALID
    if isinstance(exc, NotAuthorizedError):
        return NOT_AUTHORIZED
    if isinstance(exc, UnknownDestinationError):
        return MOVE_UNKNOWN_DESTINATION
    if isinstance(exc, ResourceUnavailableError):
        return QR_OUT_OF_RESOURCES
    return FIND_HANDLER_FAILED


def find_failure_status(exc: BaseException) -> int:
    """C-FIND status for a failure (PS3.4 C.4.1.1.4, Table C.4-1)."""
    if isinstance(exc, UnknownDestinationError):  # not a C-FIND outcome
        return FIND_HANDLER_FAILED
    return query_failure_status(exc)


def retrieve_failure_status(exc: BaseException, *, service: str) -> int:
    """C-MOVE (``service="move"``) or C-GET status for a failure (PS3.4 C.4.2.1.5, C.4.3.1.4).

    References
    ----------
    PS3.4 Table C.4-2 (C-MOVE), Table C.4-3 (C-GET).
    """
    if isinstance(exc, InvalidQueryError):
        return QR_IDENTIFIER_INVALID
    if isinstance(exc, NotAuthorizedError):
        return NOT_AUTHORIZED
    if isinstance(exc, UnknownDestinationError) and service == "move":
        return MOVE_UNKNOWN_DESTINATION
    if isinstance(exc, ResourceUnavailableError):
        return RETRIEVE_OUT_OF_RESOURCES
    return MOVE_HANDLER_FAILED if service == "move" else GET_HANDLER_FAILED


def error_comment(message: str) -> str:
    """``message`` fitted to an ErrorComment: one line, at most 64 characters."""
    text = " ".join(message.split())
    # The command set is ASCII (no Specific Character Set) and "\\" separates values.
    text = text.replace("\\", "/").encode("ascii", "replace").decode("ascii")
    return text if len(text) <= ERROR_COMMENT_MAX else text[: ERROR_COMMENT_MAX - 3] + "..."
