"""Service errors. They know no protocol: each door maps them to its own statuses in one module.

Every message says what is wrong and, where it can, how to fix it; ``code`` is a short,
stable machine-readable word for logs, metrics and tests.
"""

from __future__ import annotations


class CloudfilmError(Exception):
    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidInstanceError(CloudfilmError):
    """The object is not DICOM, is truncated, or lacks what the archive needs."""

    code = "invalid-instance"


class UnsupportedSOPClassError(CloudfilmError):
    code = "unsupported-sop-class"


class InstanceConflictError(CloudfilmError):
    """A different object under a SOP Instance UID the archive already holds elsewhere."""

    code = "instance-conflict"


class InvalidQueryError(CloudfilmError):
    code = "invalid-query"


class NotFoundError(CloudfilmError):
    code = "not-found"


class NotAuthorizedError(CloudfilmError):
    code = "not-authorized"


class NotAcceptableError(CloudfilmError):
    """The representation asked for cannot be produced (media type, transfer syntax)."""

    code = "not-acceptable"


class ResourceUnavailableError(CloudfilmError):
    """Database, disk or object storage is unreachable or full; retrying later may work."""

    code = "resource-unavailable"


class UnknownDestinationError(CloudfilmError):
    code = "unknown-destination"


class InvalidInputError(CloudfilmError):
    """A request field is malformed (national ID, hospital code, phone...); the message
    names the field."""

    code = "invalid-input"


class AlreadyExistsError(CloudfilmError):
    """The thing to create exists already (hospital code, identifier, family link)."""

    code = "already-exists"


class IdentityConflictError(CloudfilmError):
    """The operation would merge or relink identities wrongly; review it explicitly."""

    code = "identity-conflict"


class NotAuthenticatedError(CloudfilmError):
    """No valid credential: unknown, revoked, or of an inactive hospital."""

    code = "not-authenticated"


class RateLimitedError(CloudfilmError):
    """Too many attempts (codes sent or checked, failed sign-ins); ``retry_after`` says
    in how many seconds the caller may try again."""

    code = "rate-limited"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = max(int(retry_after), 1)


class InvalidReportError(CloudfilmError):
    """A report document (FHIR DiagnosticReport, DICOM SR or PDF, HL7 ORU) is malformed;
    ``field`` names where."""

    code = "invalid-report"

    def __init__(self, message: str, *, field: str = "", code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.field = field


class ReportConflictError(CloudfilmError):
    """A report version contradicts what the archive holds (another study than the one
    its earlier versions are linked to)."""

    code = "report-conflict"


class WorkitemStateError(CloudfilmError):
    """A UPS workitem cannot make this change now: not SCHEDULED when claimed, not IN
    PROGRESS when completed, or the Transaction UID given is not the one of its claim
    (PS3.4 CC.2.1.3, statuses C300-C312)."""

    code = "workitem-state"
