"""diagnostic reports (report, report_version) and study.exam_at for upload timeliness

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 18:00:00.000000
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("study") as batch:
        batch.add_column(sa.Column("exam_at", _TS, nullable=True))
    _backfill_exam_at()
    op.create_index("ix_study_exam_at", "study", ["exam_at"])
    op.create_table(
        "report",
        sa.Column("id", _ID, nullable=False),
        sa.Column("public_id", sa.String(32), nullable=False),
        sa.Column("hospital_id", _ID, nullable=False),
        sa.Column("report_key", sa.String(256), nullable=False),
        sa.Column("study_fk", _ID, nullable=True),
        sa.Column("patient_fk", _ID, nullable=True),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("accession_number", sa.String(64), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("link_state", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("version_count", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("title", sa.String(256), nullable=False),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("findings", sa.Text(), nullable=False),
        sa.Column("impression", sa.Text(), nullable=False),
        sa.Column("author", sa.String(128), nullable=False),
        sa.Column("verifier", sa.String(128), nullable=False),
        sa.Column("exam_at", _TS, nullable=True),
        sa.Column("issued_at", _TS, nullable=True),
        sa.Column("received_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("linked_at", _TS, nullable=True),
        sa.Column("listed_at", _TS, nullable=False),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.Column("search_tsv", sa.Text().with_variant(postgresql.TSVECTOR(), "postgresql"),
                  nullable=True),
        sa.ForeignKeyConstraint(["hospital_id"], ["hospital.id"],
                                name="fk_report_hospital_id_hospital"),
        sa.ForeignKeyConstraint(["study_fk"], ["study.id"], name="fk_report_study_fk_study"),
        sa.ForeignKeyConstraint(["patient_fk"], ["patient.id"],
                                name="fk_report_patient_fk_patient"),
        sa.PrimaryKeyConstraint("id", name="pk_report"),
        sa.UniqueConstraint("public_id", name="uq_report_public_id"),
        sa.UniqueConstraint("hospital_id", "report_key", name="uq_report_hospital_id_report_key"),
    )
    op.create_index("ix_report_study_fk", "report", ["study_fk"])
    op.create_index("ix_report_patient_fk", "report", ["patient_fk"])
    op.create_index("ix_report_hospital_id_study_instance_uid", "report",
                    ["hospital_id", "study_instance_uid"])
    op.create_index("ix_report_hospital_id_accession_number", "report",
                    ["hospital_id", "accession_number"])
    op.create_index("ix_report_hospital_id_received_at", "report",
                    ["hospital_id", "received_at"])
    op.create_index("ix_report_listed_at_id", "report", ["listed_at", "id"])
    op.create_index("ix_report_search_tsv", "report", ["search_tsv"], postgresql_using="gin")
    op.create_table(
        "report_version",
        sa.Column("id", _ID, nullable=False),
        sa.Column("report_fk", _ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("source_status", sa.String(32), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("door", sa.String(16), nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("title", sa.String(256), nullable=False),
        sa.Column("findings", sa.Text(), nullable=False),
        sa.Column("impression", sa.Text(), nullable=False),
        sa.Column("author", sa.String(128), nullable=False),
        sa.Column("verifier", sa.String(128), nullable=False),
        sa.Column("effective_at", _TS, nullable=True),
        sa.Column("issued_at", _TS, nullable=True),
        sa.Column("received_at", _TS, nullable=False),
        sa.Column("has_pdf", sa.Boolean(), nullable=False),
        sa.Column("pdf_blob_key", sa.String(128), nullable=False),
        sa.Column("warnings", sa.Text(), nullable=False),
        sa.Column("original_json", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["report_fk"], ["report.id"],
                                name="fk_report_version_report_fk_report"),
        sa.PrimaryKeyConstraint("id", name="pk_report_version"),
        sa.UniqueConstraint("report_fk", "version", name="uq_report_version_report_fk_version"),
    )
    op.create_index("ix_report_version_sop_instance_uid", "report_version",
                    ["sop_instance_uid"])
    op.create_index("ix_report_version_report_fk_content_sha256", "report_version",
                    ["report_fk", "content_sha256"])


def _backfill_exam_at() -> None:
    """Exam times of studies stored before this revision (same rule as ingest)."""
    zone = ZoneInfo(os.environ.get("CLOUDFILM_REPORTS__TIMEZONE", "Asia/Shanghai"))
    conn = op.get_bind()
    study = sa.table("study", sa.column("id", _ID), sa.column("study_date", sa.String),
                     sa.column("study_time", sa.String), sa.column("exam_at", _TS))
    rows = conn.execute(sa.select(study.c.id, study.c.study_date, study.c.study_time)
                        .where(study.c.study_date != "")).all()
    for row in rows:
        at = _exam_at(row.study_date, row.study_time, zone)
        if at is not None:
            conn.execute(sa.update(study).where(study.c.id == row.id).values(exam_at=at))


def _exam_at(date: str, time: str, zone: ZoneInfo) -> datetime | None:
    digits = (time or "").split(".")[0].replace(":", "")
    digits = (digits + "000000")[:6] if digits.isdigit() else "000000"
    try:
        local = datetime.strptime(date[:8] + digits, "%Y%m%d%H%M%S")
    except ValueError:
        return None
    return local.replace(tzinfo=zone).astimezone(UTC)


def downgrade() -> None:
    op.drop_table("report_version")
    op.drop_table("report")
    op.drop_index("ix_study_exam_at", "study")
    with op.batch_alter_table("study") as batch:
        batch.drop_column("exam_at")
