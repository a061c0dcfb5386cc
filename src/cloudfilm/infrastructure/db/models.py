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
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
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
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
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
    # Full header as DICOM JSON; bulk data as BulkDataURI relative to "{{BASE}}". Kept last
    # so that SQLite's overflow pages are only read when the metadata is asked for.
    metadata_json: Mapped[str] = mapped_column(Text)


class InstanceVersion(Base):
    """A superseded version of an instance, kept with its blob when a sender replaces it."""

    __tablename__ = "instance_version"
    __table_args__ = (Index(None, "sop_instance_uid"), Index(None, "blob_key"))

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospital.id"))
    blob_key: Mapped[str] = mapped_column(String(128))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    superseded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    superseded_by_sha256: Mapped[str] = mapped_column(String(64))


class DicomPeer(Base):
    """A hospital's DICOM application entity: who may associate, and where C-MOVE sends.

    Only calling AE titles registered here are accepted by the DIMSE listener; objects they
    send are recorded for ``hospital_code`` (PS3.8 7.1.1.4, calling AE title).
    """

    __tablename__ = "dicom_peer"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    ae_title: Mapped[str] = mapped_column(String(16), unique=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    hospital_code: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


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
