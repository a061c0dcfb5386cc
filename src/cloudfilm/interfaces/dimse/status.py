"""Service errors to DIMSE status codes: the one mapping for C-STORE, C-FIND, C-MOVE, C-GET.

STOW-RS reuses :func:`store_failure_status` for its FailureReason (PS3.18 10.5.3).
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


def store_failure_status(exc: BaseException) -> int:
    """C-STORE status (and STOW-RS FailureReason) for an ingest failure (PS3.4 B.2.3)."""
    if isinstance(exc, UnsupportedSOPClassError):
        return SOP_CLASS_NOT_SUPPORTED
    if isinstance(exc, NotAuthorizedError):
        return NOT_AUTHORIZED
    if isinstance(exc, ResourceUnavailableError):
        return OUT_OF_RESOURCES
    if isinstance(exc, InvalidInstanceError):
        return DATASET_MISMATCH if exc.code == "study-mismatch" else CANNOT_UNDERSTAND
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
