"""The index schema: hospitals, patients, studies, series, instances.

DICOM attributes QIDO-RS matches on are columns (snake_case of their keywords); the rest of
each header is kept as precomputed DICOM JSON so that ``/metadata`` is one indexed read.
Changing a model needs an Alembic revision (``alembic check`` in the tests finds drift).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only aliases ROWID for INTEGER PRIMARY KEY; PostgreSQL gets 64-bit keys.
Id = BigInteger().with_variant(Integer, "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Hospital(Base):
    """A producing/sending organisation: the hospital registry.

    Rows are created by ``cloudfilm hospitals add`` / the admin API, or on demand by ingest
    for a sender not registered yet (``LOCAL``, a DIMSE peer's code); those keep empty
    registry fields until an administrator completes them. Its AE titles are the
    ``dicom_peer`` rows with the same ``hospital_code``.
    """

    __tablename__ = "hospital"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # tertiary / secondary / primary (or "" when not registered yet), grade e.g. "A".
    level: Mapped[str] = mapped_column(String(16), default="", server_default="")
    grade: Mapped[str] = mapped_column(String(16), default="", server_default="")
    city: Mapped[str] = mapped_column(String(64), default="", server_default="")
    county: Mapped[str] = mapped_column(String(64), default="", server_default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    # Where its DICOM headers carry the national ID: none / patient_id / other_patient_ids
    # (item with IssuerOfPatientID = national_id_issuer) / tag (national_id_tag, "GGGGEEEE").
    national_id_source: Mapped[str] = mapped_column(String(32), default="none",
                                                    server_default="none")
    national_id_issuer: Mapped[str] = mapped_column(String(64), default="", server_default="")
    national_id_tag: Mapped[str] = mapped_column(String(8), default="", server_default="")
    # Publicly owned (公立): the commission's coverage figure is "public hospitals connected".
    public: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    # Who the commission's alerts reach (late or silent uploads): a phone, a webhook URL.
    contact_phone: Mapped[str] = mapped_column(String(32), default="", server_default="")
    alert_webhook: Mapped[str] = mapped_column(String(512), default="", server_default="")


class Patient(Base):
    """One hospital's patient record: (hospital, local PatientID, issuer) is unique."""

    __tablename__ = "patient"
    __table_args__ = (
        UniqueConstraint("hospital_id", "patient_id", "issuer_of_patient_id"),
        Index(None, "patient_id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospital.id"))
    patient_id: Mapped[str] = mapped_column(String(64))
    issuer_of_patient_id: Mapped[str] = mapped_column(String(64), default="")
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    # Upper-cased components of every name group, for case-insensitive wildcard matching.
    name_search: Mapped[str] = mapped_column(String(400), default="")
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    sex: Mapped[str] = mapped_column(String(16), default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Study(Base):
    __tablename__ = "study"
    __table_args__ = (
        Index(None, "patient_fk", "study_date"),
        Index(None, "study_date", "study_time"),
        Index(None, "accession_number"),
        Index(None, "hospital_id", "received_at"),
        Index(None, "hospital_id", "study_date"),  # policy-filtered date ranges (0028)
        Index(None, "exam_at"),
        Index(None, "updated_at"),  # the dashboard's rollup (issue 17)
        Index(None, "received_at"),  # the rollup's studies without an exam time
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    patient_fk: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospital.id"))
    study_date: Mapped[str] = mapped_column(String(8), default="")
    study_time: Mapped[str] = mapped_column(String(16), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="")
    referring_physician_name: Mapped[str] = mapped_column(String(324), default="")
    study_description: Mapped[str] = mapped_column(String(256), default="")
    study_id: Mapped[str] = mapped_column(String(16), default="")
    institution_name: Mapped[str] = mapped_column(String(256), default="")
    num_series: Mapped[int] = mapped_column(Integer, default=0)
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    # When its first object reached the platform (never moved by later objects), and when
    # the exam was done (StudyDate + StudyTime read in the province's time zone; NULL when
    # the sender gave no date): the two ends of the 12-hour upload rule.
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    exam_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Study- and patient-level attributes of the latest instance, DICOM JSON (PS3.18 F).
    attributes_json: Mapped[str] = mapped_column(Text, default="{}")


class Series(Base):
    __tablename__ = "series"
    __table_args__ = (
        Index(None, "study_fk", "series_number"),
        Index(None, "modality"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_fk: Mapped[int] = mapped_column(ForeignKey("study.id"))
    modality: Mapped[str] = mapped_column(String(16), default="")
    series_number: Mapped[int | None] = mapped_column(Integer)
    series_description: Mapped[str] = mapped_column(String(256), default="")
    body_part_examined: Mapped[str] = mapped_column(String(64), default="")
    performed_procedure_step_start_date: Mapped[str] = mapped_column(String(8), default="")
    performed_procedure_step_start_time: Mapped[str] = mapped_column(String(16), default="")
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    attributes_json: Mapped[str] = mapped_column(Text, default="{}")


class Instance(Base):
    __tablename__ = "instance"
    __table_args__ = (
        Index(None, "series_fk", "instance_number"),
        Index(None, "study_fk"),
        Index(None, "blob_key"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    series_fk: Mapped[int] = mapped_column(ForeignKey("series.id"))
    study_fk: Mapped[int] = mapped_column(ForeignKey("study.id"))
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospital.id"))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    instance_number: Mapped[int | None] = mapped_column(Integer)
    number_of_frames: Mapped[int | None] = mapped_column(Integer)
    rows: Mapped[int | None] = mapped_column(Integer)
    columns: Mapped[int | None] = mapped_column(Integer)
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str] = mapped_column(String(128))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Decoding problems met on ingest (e.g. a name in an undeclared character set).
    warnings: Mapped[str] = mapped_column(Text, default="")
    # The syntax it was received in when the archive re-encoded it losslessly ("" when
    # stored as received): what a client that names no syntax gets back (services/storage).
    original_transfer_syntax_uid: Mapped[str] = mapped_column(String(64), default="",
                                                              server_default="")
    # Which blob store holds it: "hot" (the main store) or "cold" (storage.cold_url), set
    # by the tier jobs once the cold copy is verified (services/storage/tiers.py).
    storage_tier: Mapped[str] = mapped_column(String(8), default="hot", server_default="hot")
    # Full header as DICOM JSON; bulk data as BulkDataURI relative to "{{BASE}}". Kept last
    # so that SQLite's overflow pages are only read when the metadata is asked for.
    metadata_json: Mapped[str] = mapped_column(Text)


class InstanceVersion(Base):
    """A superseded version of an instance, kept with its blob when a sender replaces it."""

    __tablename__ = "instance_version"
    __table_args__ = (Index(None, "sop_instance_uid"), Index(None, "blob_key"),
                      Index(None, "superseded_at"))  # the dashboard's rollup (issue 17)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospital.id"))
    blob_key: Mapped[str] = mapped_column(String(128))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    superseded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    superseded_by_sha256: Mapped[str] = mapped_column(String(64))
    # "replaced" (a sender sent new content; blob kept) or "transcoded" (the archive
    # re-encoded it losslessly; blob_key is "" as the original blob is gone).
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64), default="", server_default="")
    reason: Mapped[str] = mapped_column(String(16), default="replaced",
                                        server_default="replaced")


class StorageJob(Base):
    """Outbox and state of a background storage job (transcode), written in the ingest
    transaction so that kill -9 loses none; huey only carries its id (services/storage)."""

    __tablename__ = "storage_job"
    __table_args__ = (Index(None, "state", "updated_at"), Index(None, "sop_instance_uid"))

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    # pending (not yet handed to the queue), queued, cleanup (original blob deleted after
    # the grace period), done, left (left alone), dead.
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class BlobCheck(Base):
    """The scrubber's latest result per instance (SHA-256 of the stored blob re-read)."""

    __tablename__ = "blob_check"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    checked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ok: Mapped[bool] = mapped_column(Boolean)
    repaired: Mapped[bool] = mapped_column(Boolean, default=False)
    detail: Mapped[str] = mapped_column(Text, default="")


class DicomPeer(Base):
    """A hospital's DICOM application entity: who may associate, and where C-MOVE sends.

    Only calling AE titles registered here are accepted by the DIMSE listener, and only from
    ``allowed_from`` (host names, IPs or CIDRs; empty: ``host``); objects they send are
    recorded for ``hospital_code`` (PS3.8 7.1.1.4, calling AE title).
    """

    __tablename__ = "dicom_peer"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    ae_title: Mapped[str] = mapped_column(String(16), unique=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    hospital_code: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    allowed_from: Mapped[str] = mapped_column(String(255), default="", server_default="")


class Resident(Base):
    """A person of the province: the master patient index entry.

    The national ID is never stored in clear: ``national_id_hash`` (HMAC-SHA256, keyed)
    finds it, ``national_id_enc`` (AES-GCM) restores it for the few who may see it, and
    ``national_id_masked`` is what everyone else sees.
    """

    __tablename__ = "resident"
    __table_args__ = (Index(None, "merged_into"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    national_id_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    national_id_enc: Mapped[str | None] = mapped_column(String(128))
    national_id_masked: Mapped[str] = mapped_column(String(18), default="")
    name: Mapped[str] = mapped_column(String(324), default="")
    name_search: Mapped[str] = mapped_column(String(400), default="")
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    sex: Mapped[str] = mapped_column(String(1), default="")
    phone: Mapped[str] = mapped_column(String(32), default="")
    # active, or merged (into ``merged_into``; reversed by unmerge).
    status: Mapped[str] = mapped_column(String(16), default="active")
    merged_into: Mapped[int | None] = mapped_column(ForeignKey("resident.id"))
    # The resident refused research use of their data (issue 19): honoured at export.
    research_refused: Mapped[bool] = mapped_column(Boolean, default=False,
                                                   server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ResidentIdentifier(Base):
    """Another identity document of a resident (passport, HK/Macao or Taiwan permit)."""

    __tablename__ = "resident_identifier"
    __table_args__ = (UniqueConstraint("type", "issuer", "value_hash"), Index(None, "resident_id"))

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    resident_id: Mapped[int] = mapped_column(ForeignKey("resident.id"))
    type: Mapped[str] = mapped_column(String(32))
    issuer: Mapped[str] = mapped_column(String(64), default="")
    value_hash: Mapped[str] = mapped_column(String(64))
    value_enc: Mapped[str] = mapped_column(String(256))
    value_masked: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PatientLink(Base):
    """Links one hospital's patient record to a resident.

    ``state``: linked; conflict (flagged for review: ``resident_id`` is the current link if
    any, ``candidate_resident_id`` the other claim); unlinked (explicitly undone). A patient
    without a row is unmatched.
    """

    __tablename__ = "patient_link"
    __table_args__ = (Index(None, "resident_id"), Index(None, "state"))

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    patient_fk: Mapped[int] = mapped_column(ForeignKey("patient.id"), unique=True)
    resident_id: Mapped[int | None] = mapped_column(ForeignKey("resident.id"))
    candidate_resident_id: Mapped[int | None] = mapped_column(ForeignKey("resident.id"))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(256), default="")
    source: Mapped[str] = mapped_column(String(16), default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PatientContact(Base):
    """The phone a hospital's feed recorded for its patient: that hospital's record only.

    It never becomes the resident's proven phone (an account's, proven by an SMS code) and
    never receives consent codes; registering an account may use it as the second factor
    (the code is texted to it). Kept like other phones: keyed hash, AES-GCM, masked.
    """

    __tablename__ = "patient_contact"
    __table_args__ = (Index(None, "phone_hash"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    patient_fk: Mapped[int] = mapped_column(ForeignKey("patient.id"), unique=True)
    phone_hash: Mapped[str] = mapped_column(String(64))
    phone_enc: Mapped[str] = mapped_column(String(128))
    phone_masked: Mapped[str] = mapped_column(String(16), default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ActivationCode(Base):
    """A one-time account activation code a hospital hands its patient (report slip or
    desk): keyed hash only, single use, expiring; bound to one resident."""

    __tablename__ = "activation_code"
    __table_args__ = (Index(None, "resident_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    resident_id: Mapped[int] = mapped_column(ForeignKey("resident.id"))
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospital.id"))
    issued_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class FamilyLink(Base):
    """``related_resident_id`` is the parent or guardian of ``resident_id``."""

    __tablename__ = "family_link"
    __table_args__ = (UniqueConstraint("resident_id", "related_resident_id", "relation"),
                      Index(None, "related_resident_id"))

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    resident_id: Mapped[int] = mapped_column(ForeignKey("resident.id"))
    related_resident_id: Mapped[int] = mapped_column(ForeignKey("resident.id"))
    relation: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class HospitalCredential(Base):
    """An API credential of a hospital: only the SHA-256 of the token is kept."""

    __tablename__ = "hospital_credential"
    __table_args__ = (Index(None, "hospital_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospital.id"))
    label: Mapped[str] = mapped_column(String(128), default="")
    token_prefix: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class IdentityEvent(Base):
    """One identity operation (link, unlink, merge, conflict, ...), for review and undo.

    ``detail`` is JSON without personal data (ids and reasons only).
    """

    __tablename__ = "identity_event"
    __table_args__ = (Index(None, "resident_id"), Index(None, "patient_fk"))

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(128), default="")
    resident_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    other_resident_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"))
    patient_fk: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    hospital_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    detail: Mapped[str] = mapped_column(Text, default="{}")


# --- accounts, sign-in, SMS and authorisation grants (issue 5, revision 0004) -------------


class Account(Base):
    """A person who signs in: doctor, resident, platform or hospital administrator.

    ``kind``: doctor / hospital_admin (both belong to ``hospital_id``), resident (bound to
    ``resident_id``, signs in with the phone), admin (platform). Phones are kept like
    national IDs: keyed hash to find, AES-GCM to text them, masked to show.
    """

    __tablename__ = "account"
    __table_args__ = (Index(None, "hospital_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    username: Mapped[str | None] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128), default="")
    hospital_id: Mapped[int | None] = mapped_column(ForeignKey("hospital.id"))
    department: Mapped[str] = mapped_column(String(128), default="")
    resident_id: Mapped[int | None] = mapped_column(ForeignKey("resident.id"), unique=True)
    phone_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    phone_enc: Mapped[str | None] = mapped_column(String(128))
    phone_masked: Mapped[str] = mapped_column(String(16), default="")
    password_hash: Mapped[str | None] = mapped_column(String(256))
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    first_failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_sign_in_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A health bureau's area (kind "bureau"): "<city>" or "<city>/<county>" (issue 17).
    area: Mapped[str] = mapped_column(String(130), default="", server_default="")


class AuthSession(Base):
    """A signed-in session: only the SHA-256 of the opaque ``cfs_`` token is stored."""

    __tablename__ = "auth_session"
    __table_args__ = (Index(None, "account_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OtpCode(Base):
    """A one-time SMS code: HMAC of the code only, single use, a few attempts.

    ``purpose``: sign_in (``subject`` = phone hash) or grant (``subject`` = ``grant:<id>``).
    """

    __tablename__ = "otp_code"
    __table_args__ = (Index(None, "purpose", "subject"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(80))
    code_hash: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SmsOutbox(Base):
    """Messages of the local "outbox" SMS backend (development and the embedded platform):
    nothing leaves the machine; the text is kept so that a person can read it here."""

    __tablename__ = "sms_outbox"
    __table_args__ = (Index(None, "phone_hash"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    phone_hash: Mapped[str] = mapped_column(String(64))
    phone_masked: Mapped[str] = mapped_column(String(16), default="")
    template: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)


class AccessGrant(Base):
    """A doctor's authorisation to see a resident's studies (all, or ``study_uids``).

    ``mode``: sms / portal / in_person / break_glass; ``status``: requested / active /
    denied / revoked / expired (an active grant past ``expires_at`` is expired even before
    its status says so). ``evidence`` is JSON without clear personal data;
    ``review_status``: "" (no review needed) / pending / accepted / flagged.
    """

    __tablename__ = "access_grant"
    __table_args__ = (
        Index(None, "doctor_account_id", "status"),
        Index(None, "resident_id", "status"),
        Index(None, "hospital_id", "review_status"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    doctor_account_id: Mapped[int] = mapped_column(ForeignKey("account.id"))
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospital.id"))
    resident_id: Mapped[int] = mapped_column(ForeignKey("resident.id"))
    scope_all: Mapped[bool] = mapped_column(Boolean, default=True)
    study_uids: Mapped[str] = mapped_column(Text, default="[]")
    purpose: Mapped[str] = mapped_column(String(256), default="")
    mode: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    hours: Mapped[int] = mapped_column(Integer)
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str] = mapped_column(String(64), default="")
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_by: Mapped[str] = mapped_column(String(64), default="")
    evidence: Mapped[str] = mapped_column(Text, default="{}")
    review_status: Mapped[str] = mapped_column(String(16), default="")
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reviewed_by: Mapped[str] = mapped_column(String(64), default="")
    review_note: Mapped[str] = mapped_column(String(256), default="")


class RateLimitEvent(Base):
    """One counted attempt in a rate-limit bucket (``sms-send:phone:<hash>``...); a table,
    so that every process of a deployment counts the same attempts."""

    __tablename__ = "rate_limit_event"
    __table_args__ = (Index(None, "bucket", "at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    bucket: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AuditEvent(Base):
    """One audit record: an access decision, sign-in, grant or link change, export.

    Append-only (database triggers refuse UPDATE and DELETE) and hash-chained in ``seq``
    order: ``hash = SHA-256(prev_hash + canonical JSON of the row)`` (``services.access.
    audit``). No foreign keys: a record outlives what it names. No personal data: ids,
    UIDs, a keyed hash of the client address, reasons.
    """

    __tablename__ = "audit_event"
    __table_args__ = (
        Index(None, "resident_id", "seq"),
        Index(None, "actor_subject", "seq"),
        Index(None, "at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # operator / hospital / doctor / resident / admin
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_subject: Mapped[str] = mapped_column(String(128))
    actor_hospital_id: Mapped[int | None] = mapped_column(BigInteger)
    actor_hospital_code: Mapped[str] = mapped_column(String(64), default="")
    actor_display: Mapped[str] = mapped_column(String(256), default="")
    actor_department: Mapped[str] = mapped_column(String(128), default="")
    address_hash: Mapped[str] = mapped_column(String(64), default="")
    action: Mapped[str] = mapped_column(String(32))
    resource_type: Mapped[str] = mapped_column(String(16), default="")
    resource_uid: Mapped[str] = mapped_column(String(64), default="")
    resident_id: Mapped[int | None] = mapped_column(BigInteger)
    # allowed / denied (decisions), success / failure (sign-ins, changes)
    outcome: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str] = mapped_column(String(128), default="")
    detail: Mapped[str] = mapped_column(Text, default="{}")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditEventResident(Base):
    """The residents one audit record names besides its ``resident_id``: an answer that
    carries several residents' data is one record (its ``detail`` lists them, hashed with
    the chain), and one row here per resident, so that each finds it in "who looked at my
    data". Append-only like ``audit_event``; ``audit verify`` checks these rows against the
    hashed list (revision 0033)."""

    __tablename__ = "audit_event_resident"
    __table_args__ = (Index(None, "seq"),)

    resident_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)


class AuditChainHead(Base):
    """The audit chain's last ``seq`` and ``hash``: one row (id 1), locked by each appender
    so that concurrent writers extend one chain, and compared by ``audit verify`` so that a
    removed tail is detected."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


# --- diagnostic reports (issue 6, revision 0006) -------------------------------------------

# PostgreSQL's full-text vector; SQLite keeps NULL there and searches ``search_text``.
SearchVector = Text().with_variant(TSVECTOR(), "postgresql")


class Report(Base):
    """A diagnostic report: one row per report, holding its *current* version for showing
    and searching; every version (amendments included) is a ``report_version`` row.

    ``report_key`` is the sender's identity of the report (FHIR identifier, the first SR's
    "sop:<uid>", HL7 "hl7:<filler order number>"), unique per hospital. ``link_state`` is
    ``held`` while the study it names has not arrived (``study_fk`` NULL) and ``linked``
    once it has. ``public_id`` is what the API shows (random, so ids cannot be counted).
    """

    __tablename__ = "report"
    __table_args__ = (
        UniqueConstraint("hospital_id", "report_key"),
        Index(None, "study_fk"),
        Index(None, "patient_fk"),
        Index(None, "hospital_id", "study_instance_uid"),
        Index(None, "hospital_id", "accession_number"),
        Index(None, "hospital_id", "received_at"),
        Index(None, "listed_at", "id"),
        Index(None, "search_tsv", postgresql_using="gin"),
        Index(None, "updated_at"),  # the dashboard's rollup (issue 17)
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospital.id"))
    report_key: Mapped[str] = mapped_column(String(256))
    study_fk: Mapped[int | None] = mapped_column(ForeignKey("study.id"))
    patient_fk: Mapped[int | None] = mapped_column(ForeignKey("patient.id"))
    # What the report claims, kept so that a held report can be linked when images come.
    study_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="")
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    link_state: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))
    current_version: Mapped[int] = mapped_column(Integer)
    version_count: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(256), default="")
    modality: Mapped[str] = mapped_column(String(16), default="")
    findings: Mapped[str] = mapped_column(Text, default="")
    impression: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str] = mapped_column(String(128), default="")
    verifier: Mapped[str] = mapped_column(String(128), default="")
    # Exam time (the study's, else what the report says) and issue time of the current
    # version; received_at: the first version's arrival (the 12-hour rule's other end).
    exam_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    issued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    linked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What lists and searches sort and filter by: the exam time, else the arrival time
    # (never NULL, so both databases order alike and the index serves "newest first").
    listed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Normalised title + findings + impression (infrastructure/reports/search.py).
    search_text: Mapped[str] = mapped_column(Text, default="")
    search_tsv: Mapped[str | None] = mapped_column(SearchVector)


class ReportVersion(Base):
    """One version of a report exactly as it arrived; never updated or deleted, so an
    amendment or a cancellation never erases what was said before.

    ``content_sha256`` makes a resend of the same version harmless; ``sop_instance_uid`` is
    the DICOM object a DICOM report version came in (its PDF or SR is served from there);
    ``pdf_blob_key`` a PDF that came inline (FHIR presentedForm).
    """

    __tablename__ = "report_version"
    __table_args__ = (
        UniqueConstraint("report_fk", "version"),
        Index(None, "sop_instance_uid"),
        Index(None, "report_fk", "content_sha256"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    report_fk: Mapped[int] = mapped_column(ForeignKey("report.id"))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    source_status: Mapped[str] = mapped_column(String(32), default="")
    source: Mapped[str] = mapped_column(String(16))
    door: Mapped[str] = mapped_column(String(16), default="")
    content_sha256: Mapped[str] = mapped_column(String(64))
    sop_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    title: Mapped[str] = mapped_column(String(256), default="")
    findings: Mapped[str] = mapped_column(Text, default="")
    impression: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str] = mapped_column(String(128), default="")
    verifier: Mapped[str] = mapped_column(String(128), default="")
    effective_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    issued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    has_pdf: Mapped[bool] = mapped_column(Boolean, default=False)
    pdf_blob_key: Mapped[str] = mapped_column(String(128), default="")
    warnings: Mapped[str] = mapped_column(Text, default="")
    original_json: Mapped[str] = mapped_column(Text, default="{}")


# --- exam mutual recognition (issue 15, revision 0009) -------------------------------------


class RecognitionItem(Base):
    """A recognisable exam item of the catalogue (检查检验结果互认项目).

    ``accept_levels`` is JSON ``{ordering level: [prior hospital levels it must accept]}``;
    ``procedure`` is ``plain`` / ``contrast`` / ``any``. ``typical_dose_msv`` is NULL for
    items without ionising radiation (MR, US).
    """

    __tablename__ = "recognition_item"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name_zh: Mapped[str] = mapped_column(String(128))
    name_en: Mapped[str] = mapped_column(String(128))
    modality: Mapped[str] = mapped_column(String(16))
    body_region: Mapped[str] = mapped_column(String(32))
    procedure: Mapped[str] = mapped_column(String(16))
    window_days: Mapped[int] = mapped_column(Integer)
    accept_levels: Mapped[str] = mapped_column(Text)
    require_final_report: Mapped[bool] = mapped_column(Boolean)
    require_complete: Mapped[bool] = mapped_column(Boolean)
    require_qc: Mapped[bool] = mapped_column(Boolean)
    typical_dose_msv: Mapped[float | None] = mapped_column(Float)
    active: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_by: Mapped[str] = mapped_column(String(128))


class RecognitionCodeMap(Base):
    """A hospital's own procedure code (HIS/RIS order code) mapped to a catalogue item."""

    __tablename__ = "recognition_code_map"
    __table_args__ = (UniqueConstraint("hospital_id", "procedure_code"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospital.id"))
    procedure_code: Mapped[str] = mapped_column(String(64))
    item_code: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_by: Mapped[str] = mapped_column(String(128))


class RecognitionTerm(Base):
    """One normalisation entry: a normalised text of ``field`` (body_part, description,
    procedure_code, modality, technique) and what it means. ``match``: exact / contains."""

    __tablename__ = "recognition_term"
    __table_args__ = (UniqueConstraint("field", "pattern"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    field: Mapped[str] = mapped_column(String(16))
    pattern: Mapped[str] = mapped_column(String(128))
    value: Mapped[str] = mapped_column(String(32))
    match: Mapped[str] = mapped_column(String(8))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_by: Mapped[str] = mapped_column(String(128))


class RecognitionPrice(Base):
    """What an item costs at a hospital level (yuan), for the "cost avoided" figure."""

    __tablename__ = "recognition_price"
    __table_args__ = (UniqueConstraint("item_code", "level"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    item_code: Mapped[str] = mapped_column(String(32))
    level: Mapped[str] = mapped_column(String(16))
    price_yuan: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_by: Mapped[str] = mapped_column(String(128))


class RecognitionChange(Base):
    """Append-only history of the rules: who changed what, when (before/after as JSON).
    The largest ``id`` is the rules version that study classifications are tagged with."""

    __tablename__ = "recognition_change"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(128))
    entity: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(160))
    action: Mapped[str] = mapped_column(String(8))
    before_json: Mapped[str] = mapped_column(Text)
    after_json: Mapped[str] = mapped_column(Text)


class RecognitionUnmapped(Base):
    """A value the normalisation could not map (or mapped ambiguously), for an
    administrator to map; never guessed."""

    __tablename__ = "recognition_unmapped"
    __table_args__ = (UniqueConstraint("field", "value", "hospital_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    field: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(256))
    hospital_id: Mapped[int] = mapped_column(BigInteger)
    problem: Mapped[str] = mapped_column(String(16))
    seen: Mapped[int] = mapped_column(Integer)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StudyRecognition(Base):
    """A study's normalised item under rules version ``rules_version`` (recomputed when the
    rules change), with the columns the check filters on: the index the check uses is
    (patient, item, date)."""

    __tablename__ = "study_recognition"
    __table_args__ = (Index(None, "patient_fk", "item_code", "study_date"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    study_fk: Mapped[int] = mapped_column(ForeignKey("study.id"), unique=True)
    patient_fk: Mapped[int] = mapped_column(BigInteger)
    study_date: Mapped[str] = mapped_column(String(8))
    item_code: Mapped[str] = mapped_column(String(32))
    modality: Mapped[str] = mapped_column(String(16))
    body_region: Mapped[str] = mapped_column(String(32))
    procedure: Mapped[str] = mapped_column(String(16))
    rules_version: Mapped[int] = mapped_column(BigInteger)
    # "" (not checked), passed, failed: the optional quality-control flag.
    qc: Mapped[str] = mapped_column(String(8), default="")
    classified_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RecognitionCheck(Base):
    """One check and the doctor's decision on it; ``public_id`` is the decision id.

    ``decision``: "" (none yet), accepted, repeat (``reason`` from a fixed list);
    ``performed_at``: an order feed said the exam was done anyway. ``month`` (YYYY-MM in
    the province's zone) and the ordering hospital's level are kept so that the figures
    are one GROUP BY.
    """

    __tablename__ = "recognition_check"
    __table_args__ = (
        Index(None, "month", "hospital_id"),
        Index(None, "resident_id"),
        Index(None, "hospital_id", "order_ref"),  # revision 0019: the order feed
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(36), unique=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    month: Mapped[str] = mapped_column(String(7))
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospital.id"))
    hospital_level: Mapped[str] = mapped_column(String(16))
    department: Mapped[str] = mapped_column(String(128))
    actor_subject: Mapped[str] = mapped_column(String(128))
    resident_id: Mapped[int | None] = mapped_column(BigInteger)
    patient_fk: Mapped[int] = mapped_column(BigInteger)
    item_code: Mapped[str] = mapped_column(String(32))
    priors: Mapped[int] = mapped_column(Integer)
    prior_uids: Mapped[str] = mapped_column(Text)
    decision: Mapped[str] = mapped_column(String(16), default="")
    reason: Mapped[str] = mapped_column(String(32), default="")
    reason_text: Mapped[str] = mapped_column(String(256), default="")
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str] = mapped_column(String(128), default="")
    performed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The hospital's order number (HL7 ORC-2 placer order, FHIR ServiceRequest identifier)
    # when the check came through the order feed: a later "performed" finds the check.
    order_ref: Mapped[str] = mapped_column(String(64), default="", server_default="")


class GatewayHeartbeat(Base):
    """The last heartbeat of a hospital's edge gateway (``cloudfilm gateway``), per hospital
    and gateway AE title, with the queue figures it reported: the commission sees which
    gateways are alive and which hold a backlog. No patient data."""

    __tablename__ = "gateway_heartbeat"
    __table_args__ = (UniqueConstraint("hospital_id", "ae_title"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospital.id"))
    ae_title: Mapped[str] = mapped_column(String(16))
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    queued: Mapped[int] = mapped_column(Integer)
    refused: Mapped[int] = mapped_column(Integer)
    oldest_unsent_seconds: Mapped[int | None] = mapped_column(Integer)
    bytes_queued: Mapped[int] = mapped_column(BigInteger)
    quota_bytes: Mapped[int] = mapped_column(BigInteger)


class ResearchProject(Base):
    """A de-identified research project (issue 19): who asks, under which ethics approval,
    with which de-identification options (``options_json``) and cohort (``cohort_json``).

    ``status``: proposed (counts only, small counts hidden), approved (by a platform
    administrator: exports allowed until ``ethics_expires``), closed. ``key_enc`` is the
    project's pseudonym key, encrypted: pseudonyms are consistent within the project and
    unlinkable across projects.
    """

    __tablename__ = "research_project"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    title: Mapped[str] = mapped_column(String(256))
    principal_investigator: Mapped[str] = mapped_column(String(128))
    institution: Mapped[str] = mapped_column(String(256))
    ethics_reference: Mapped[str] = mapped_column(String(128))
    ethics_expires: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    options_json: Mapped[str] = mapped_column(Text, default="{}")
    cohort_json: Mapped[str] = mapped_column(Text, default="{}")
    status: Mapped[str] = mapped_column(String(16), default="proposed")
    key_enc: Mapped[str] = mapped_column(String(256))
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    approved_by: Mapped[str] = mapped_column(String(128), default="")
    approved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ResearchExport(Base):
    """One export of a project: what left (counts) and the SHA-256 of its manifest, which
    the ethics board can compare with the manifest the researcher holds."""

    __tablename__ = "research_export"
    __table_args__ = (Index(None, "project_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("research_project.id"))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    exported: Mapped[int] = mapped_column(Integer, default=0)
    excluded: Mapped[int] = mapped_column(Integer, default=0)
    refused: Mapped[int] = mapped_column(Integer, default=0)
    manifest_sha256: Mapped[str] = mapped_column(String(64), default="")
    created_by: Mapped[str] = mapped_column(String(128))


class ShareLink(Base):
    """A resident's view-only link to one study for a doctor outside the platform: a
    random token (only its SHA-256 stored), an optional PIN (hashed with the token), an
    expiry, revocable; every use is an audit record under ``share:<id>``."""

    __tablename__ = "share_link"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    resident_id: Mapped[int] = mapped_column(ForeignKey("resident.id"), index=True)
    account_id: Mapped[int | None] = mapped_column(BigInteger)
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    pin_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    uses: Mapped[int] = mapped_column(Integer)
    failed_pins: Mapped[int] = mapped_column(Integer)


class PortalPreference(Base):
    """What a resident chose in the portal, kept with the account so that every phone
    they sign in on shows it (elderly mode: larger type, higher contrast)."""

    __tablename__ = "portal_preference"

    account_id: Mapped[int] = mapped_column(ForeignKey("account.id"), primary_key=True)
    elderly: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# --- the doctor's workstation (issue 14) ---------------------------------------------------


class WorkstationLaunch(Base):
    """A single-use launch of the workstation minted by a hospital's HIS with its credential
    (IHE Invoke Image Display style): bound to the hospital, one of its patient records and
    one doctor's user name; only the SHA-256 of the random token is stored."""

    __tablename__ = "workstation_launch"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospital.id"))
    patient_fk: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    doctor_username: Mapped[str] = mapped_column(String(64))
    study_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="")
    item_code: Mapped[str] = mapped_column(String(32), default="")
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
# --- the commission's dashboard: daily rollups, watermarks, alerts (issue 17, 0017) -------
# ``day`` is the local date (settings reports.timezone) as YYYY-MM-DD. Rows of a day are
# replaced as a whole by the rollup (services/stats/rollup.py), so a rerun changes nothing.


class _StudyMeasures:
    """The study figures a day row and a month row both hold (the month's are its days' sums)."""

    studies: Mapped[int] = mapped_column(Integer)
    instances: Mapped[int] = mapped_column(BigInteger)
    bytes: Mapped[int] = mapped_column(BigInteger)
    on_time: Mapped[int] = mapped_column(Integer)
    late: Mapped[int] = mapped_column(Integer)
    undated: Mapped[int] = mapped_column(Integer)
    delay_sum_s: Mapped[float] = mapped_column(Float)
    delay_max_s: Mapped[float] = mapped_column(Float)
    no_report_24h: Mapped[int] = mapped_column(Integer)
    no_report_72h: Mapped[int] = mapped_column(Integer)


class _ReportMeasures:
    """The report figures a day row and a month row both hold."""

    reports: Mapped[int] = mapped_column(Integer)
    on_time: Mapped[int] = mapped_column(Integer)
    late: Mapped[int] = mapped_column(Integer)
    without_images: Mapped[int] = mapped_column(Integer)


STUDY_MEASURES = ("studies", "instances", "bytes", "on_time", "late", "undated",
                  "delay_sum_s", "delay_max_s", "no_report_24h", "no_report_72h")
REPORT_MEASURES = ("reports", "on_time", "late", "without_images")


class StatsStudyDay(_StudyMeasures, Base):
    """Studies per exam day (the arrival day when the sender gave no exam time), hospital
    and modality: volume and the 12-hour rule.

    ``hospital_id`` is a *unit*: a hospital (> 0), the province (0) or an area (< 0, minus
    ``stats_area.id``); units other than hospitals are sums the rollup precomputes so that a
    province's or a bureau's figure reads one row per day, not one per hospital."""

    __tablename__ = "stats_study_day"
    # A unit's days; every hospital's totals ("*") of a period (a ranking) in one range.
    # The unit's days carry their figures (PostgreSQL: ``INCLUDE``): a province's year by
    # day is read from the index alone, not from the ~800 heap pages its rows are spread
    # over (each day's rows are written together, every unit's beside every hospital's).
    __table_args__ = (Index(None, "hospital_id", "day",
                            postgresql_include=["modality", *STUDY_MEASURES]),
                      Index(None, "modality", "day"))

    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    hospital_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    modality: Mapped[str] = mapped_column(String(16), primary_key=True)


class StatsReportDay(_ReportMeasures, Base):
    """Reports per exam day and hospital: within 12 hours, late, still without images."""

    __tablename__ = "stats_report_day"
    __table_args__ = (Index(None, "hospital_id", "day",
                            postgresql_include=list(REPORT_MEASURES)),)

    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    hospital_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)


class StatsStudyMonth(_StudyMeasures, Base):
    """``stats_study_day`` summed per local month (YYYY-MM) and unit: a year's figure reads
    at most 13 month rows plus the days of the months it cuts (same job, same watermark:
    a month is recomputed from its days whenever one of them is)."""

    __tablename__ = "stats_study_month"
    # As the day table: a unit's months; every hospital's totals of a year (a ranking).
    __table_args__ = (Index(None, "hospital_id", "month"), Index(None, "modality", "month"))

    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    hospital_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    modality: Mapped[str] = mapped_column(String(16), primary_key=True)


class StatsReportMonth(_ReportMeasures, Base):
    """``stats_report_day`` summed per local month and unit."""

    __tablename__ = "stats_report_month"
    __table_args__ = (Index(None, "hospital_id", "month"),)

    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    hospital_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)


class StatsArea(Base):
    """The areas a health bureau can be given (a registry city, or ``city/county``): the
    rollup keeps their sums as unit ``-id``."""

    __tablename__ = "stats_area"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(130), unique=True)


class StatsUseDay(Base):
    """Counters of use per day and hospital (0: the province, e.g. resident sign-ins):
    ``metric`` names one (resident_sign_in, doctor_view, grant_active, break_glass ...)."""

    __tablename__ = "stats_use_day"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    hospital_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    metric: Mapped[str] = mapped_column(String(48), primary_key=True)
    count: Mapped[float] = mapped_column(Float)


class StatsPairDay(Base):
    """Cross-hospital views per day: doctors of ``viewer`` reading studies of ``owner``
    under a grant of ``mode`` (distinct doctor and study per day)."""

    __tablename__ = "stats_pair_day"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    viewer_hospital_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    owner_hospital_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    mode: Mapped[str] = mapped_column(String(16), primary_key=True)
    views: Mapped[int] = mapped_column(Integer)


class StatsHospital(Base):
    """When each hospital's first and last study reached the platform (coverage)."""

    __tablename__ = "stats_hospital"

    hospital_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    first_received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StatsWatermark(Base):
    """How far the rollup has read each source (an id or a time, as text)."""

    __tablename__ = "stats_watermark"

    source: Mapped[str] = mapped_column(String(32), primary_key=True)
    position: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StatsAlert(Base):
    """A hospital late beyond the threshold on ``day``, or silent since ``day``: shown on
    the dashboard, optionally sent to the hospital's contact (``notified``)."""

    __tablename__ = "stats_alert"
    __table_args__ = (UniqueConstraint("hospital_id", "kind", "day"), Index(None, "opened_at"))

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    hospital_id: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))
    day: Mapped[str] = mapped_column(String(10))
    value: Mapped[float] = mapped_column(Float)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    notified: Mapped[str] = mapped_column(String(64), default="")
# --- lifecycle: retention rules, legal holds, deletions (issue 16, revision 0018) ----------


class RetentionRule(Base):
    """How long studies matching it are kept (services/lifecycle/retention.py). Blank
    criteria match everything; when several rules match a study the longest end wins, so a
    rule can only be met, never cut short by another."""

    __tablename__ = "retention_rule"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    modality: Mapped[str] = mapped_column(String(16), default="")
    hospital_code: Mapped[str] = mapped_column(String(64), default="")
    # A case-insensitive part of the study description ("体检", "screening"): the kind.
    study_kind: Mapped[str] = mapped_column(String(64), default="")
    years: Mapped[int] = mapped_column(Integer)
    # Younger than minor_age at the study: kept at least until minor_age + minor_years.
    minor_age: Mapped[int | None] = mapped_column(Integer)
    minor_years: Mapped[int] = mapped_column(Integer, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LegalHold(Base):
    """A legal hold on one study, or on a patient (hospital code + PatientID): no deletion,
    no tier move and no re-encoding of what it covers until it is released."""

    __tablename__ = "legal_hold"
    __table_args__ = (Index(None, "study_instance_uid"), Index(None, "hospital_code",
                                                               "patient_id"))

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    scope: Mapped[str] = mapped_column(String(8))  # study / patient
    study_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    hospital_code: Mapped[str] = mapped_column(String(64), default="")
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    reason: Mapped[str] = mapped_column(Text)
    placed_by: Mapped[str] = mapped_column(String(128))
    placed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    released_by: Mapped[str] = mapped_column(String(128), default="")
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DeletionRequest(Base):
    """Step one of a deletion after retention: what would be deleted, proposed by one
    administrator; step two (another administrator) executes it, re-checking each study."""

    __tablename__ = "deletion_request"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # proposed / executed / cancelled
    reason: Mapped[str] = mapped_column(Text)
    proposed_by: Mapped[str] = mapped_column(String(128))
    proposed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str] = mapped_column(String(128), default="")
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # JSON: the study UIDs proposed, then the outcome per study after execution.
    studies_json: Mapped[str] = mapped_column(Text)
    result_json: Mapped[str] = mapped_column(Text, default="{}")
    objects: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
# -- reconciliation queue (issue 12, "accept what hospitals really send") -----------------


class ReconciliationItem(Base):
    """An object stored durably but kept out of every patient's and study's record until
    someone of its hospital or a platform administrator settles it: no PatientID
    (``reason="no-patient-id"``), or a Study Instance UID another hospital holds
    (``"study-clash"``, ``clash_study_fk`` that study). Its blob is referenced here, so the
    sweeper keeps it whatever the outcome. ``state``: open, assigned (filed under a
    patient), copy (a genuine copy of the other hospital's study), own-study (filed as the
    hospital's own study under new UIDs); ``result_json`` says what the settling did."""

    __tablename__ = "reconciliation_item"
    __table_args__ = (
        UniqueConstraint("hospital_id", "sop_instance_uid", "sha256"),
        Index(None, "hospital_id", "state", "id"),
        Index(None, "state", "id"),
        Index(None, "blob_key"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospital.id"))
    reason: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    clash_study_fk: Mapped[int | None] = mapped_column(ForeignKey("study.id"))
    blob_key: Mapped[str] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    door: Mapped[str] = mapped_column(String(16))
    # What the header says, for the person settling it (name, birth date, sex, study date,
    # modality, description, accession): DICOM text, never a national ID.
    summary_json: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_by: Mapped[str] = mapped_column(String(128), default="", server_default="")
    result_json: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
# -- AI assistance (issue 19, helper "ai"): algorithms, their hospitals, the UPS worklist,
# -- results -------------------------------------------------------------------------------


class AiAlgorithm(Base):
    """An AI algorithm the platform may run: an in-process plug-in (``plugin`` names it) or
    an external engine (``kind='external'``, its ``cfa_`` credential's SHA-256 in
    ``token_hash``). ``status``: registered (nothing runs), approved (by a platform
    administrator other than the one who registered it), suspended. Workitems are made only
    for studies of hospitals that enabled it (``ai_enablement``) and that match its
    ``modalities`` / ``body_parts`` (space-separated, upper case; empty: any)."""

    __tablename__ = "ai_algorithm"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(32))
    vendor: Mapped[str] = mapped_column(String(128), default="")
    intended_use: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[str] = mapped_column(String(16))
    plugin: Mapped[str] = mapped_column(String(256), default="")
    modalities: Mapped[str] = mapped_column(String(128), default="")
    body_parts: Mapped[str] = mapped_column(String(256), default="")
    status: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), default="", index=True)
    # What it reads: "original" images (over WADO-RS, through the policy) or
    # "deidentified" ones (PS3.15 Annex E Basic Profile under its own key, encrypted in
    # key_enc; never the originals).
    input: Mapped[str] = mapped_column(String(16), default="original")
    key_enc: Mapped[str] = mapped_column(String(256), default="")
    registered_by: Mapped[str] = mapped_column(String(128))
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    approved_by: Mapped[str] = mapped_column(String(128), default="")
    approved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AiEnablement(Base):
    """A hospital runs an approved algorithm on its new studies (enabled by its
    administrator or a platform administrator)."""

    __tablename__ = "ai_enablement"
    __table_args__ = (UniqueConstraint("algorithm_id", "hospital_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    algorithm_id: Mapped[int] = mapped_column(ForeignKey("ai_algorithm.id"))
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospital.id"))
    enabled_by: Mapped[str] = mapped_column(String(128))
    enabled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AiPendingStudy(Base):
    """Outbox written by ingest in its transaction: a study that received objects; once
    quiet until ``due_at`` it is matched against the algorithms (services/ai)."""

    __tablename__ = "ai_pending_study"
    __table_args__ = (Index(None, "due_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AiWorkitem(Base):
    """A UPS workitem (PS3.4 CC): one algorithm, one study. ``state`` is the Procedure Step
    State (SCHEDULED, IN PROGRESS, COMPLETED, CANCELED); ``transaction_uid`` is set by the
    claim and must accompany every later change (PS3.4 CC.1.1)."""

    __tablename__ = "ai_workitem"
    __table_args__ = (
        # One workitem per run: automatic scheduling makes run 1 (so a study that receives
        # more objects is not scheduled twice); an explicit re-run makes the next run.
        UniqueConstraint("algorithm_id", "study_instance_uid", "run"),
        Index(None, "algorithm_id", "state"),
        Index(None, "study_instance_uid"),
        Index(None, "state", "updated_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    uid: Mapped[str] = mapped_column(String(64), unique=True)
    algorithm_id: Mapped[int] = mapped_column(ForeignKey("ai_algorithm.id"))
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    run: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospital.id"))
    state: Mapped[str] = mapped_column(String(16))
    transaction_uid: Mapped[str] = mapped_column(String(64), default="")
    # Whether the in-process runner was handed it (huey), so the relay hands it over once.
    queued: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str] = mapped_column(Text, default="")
    # Attributes set by the engine through UPS-RS Update Workitem (DICOM JSON, "" if none).
    updates: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AiUpsSubscription(Base):
    """A UPS subscription (PS3.4 CC.2.3, PS3.18 11.10) of an algorithm's AE title to one of
    its workitems, or to all of them (``workitem_uid`` ""); ``suspended`` stops the global
    one from following new workitems."""

    __tablename__ = "ai_ups_subscription"
    __table_args__ = (UniqueConstraint("algorithm_id", "ae_title", "workitem_uid"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    algorithm_id: Mapped[int] = mapped_column(ForeignKey("ai_algorithm.id"))
    ae_title: Mapped[str] = mapped_column(String(16))
    workitem_uid: Mapped[str] = mapped_column(String(64), default="")
    suspended: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AiResult(Base):
    """A DICOM object an algorithm's workitem produced (an SR, a SEG), stored as a new
    series of the study; doctors confirm or reject it (the portal shows only confirmed
    ones, if at all)."""

    __tablename__ = "ai_result"
    __table_args__ = (Index(None, "study_instance_uid"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    workitem_id: Mapped[int] = mapped_column(ForeignKey("ai_workitem.id"), index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    findings_json: Mapped[str] = mapped_column(Text, default="[]")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    review: Mapped[str] = mapped_column(String(16), default="")
    reviewed_by: Mapped[str] = mapped_column(String(128), default="")
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Versions (issue 19): the results of one workitem share a version, 1 + the highest of
    # the same algorithm (name and vendor) on the study; a newer one marks them superseded.
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    superseded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reviewer_name: Mapped[str] = mapped_column(String(128), default="", server_default="")
