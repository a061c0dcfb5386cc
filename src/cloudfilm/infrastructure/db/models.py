"""The index schema: hospitals, patients, studies, series, instances.

DICOM attributes QIDO-RS matches on are columns (snake_case of their keywords); the rest of
each header is kept as precomputed DICOM JSON so that ``/metadata`` is one indexed read.
Changing a model needs an Alembic revision (``alembic check`` in the tests finds drift).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
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
    """A producing/sending organisation. The identity issue grows this into the registry."""

    __tablename__ = "hospital"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


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
