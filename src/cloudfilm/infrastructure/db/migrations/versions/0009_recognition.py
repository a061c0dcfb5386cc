"""exam mutual recognition: catalogue, code maps, terms, prices, rules history,
unmapped values, study classification, checks and decisions

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-03 17:59:31.441355
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recognition_change",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("entity", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=160), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("before_json", sa.Text(), nullable=False),
        sa.Column("after_json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recognition_change")),
    )
    op.create_table(
        "recognition_item",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name_zh", sa.String(length=128), nullable=False),
        sa.Column("name_en", sa.String(length=128), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=False),
        sa.Column("body_region", sa.String(length=32), nullable=False),
        sa.Column("procedure", sa.String(length=16), nullable=False),
        sa.Column("window_days", sa.Integer(), nullable=False),
        sa.Column("accept_levels", sa.Text(), nullable=False),
        sa.Column("require_final_report", sa.Boolean(), nullable=False),
        sa.Column("require_complete", sa.Boolean(), nullable=False),
        sa.Column("require_qc", sa.Boolean(), nullable=False),
        sa.Column("typical_dose_msv", sa.Float(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recognition_item")),
        sa.UniqueConstraint("code", name=op.f("uq_recognition_item_code")),
    )
    op.create_table(
        "recognition_price",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("item_code", sa.String(length=32), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("price_yuan", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recognition_price")),
        sa.UniqueConstraint(
            "item_code", "level", name=op.f("uq_recognition_price_item_code_level")
        ),
    )
    op.create_table(
        "recognition_term",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("field", sa.String(length=16), nullable=False),
        sa.Column("pattern", sa.String(length=128), nullable=False),
        sa.Column("value", sa.String(length=32), nullable=False),
        sa.Column("match", sa.String(length=8), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recognition_term")),
        sa.UniqueConstraint("field", "pattern", name=op.f("uq_recognition_term_field_pattern")),
    )
    op.create_table(
        "recognition_unmapped",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("field", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.Column("hospital_id", sa.BigInteger(), nullable=False),
        sa.Column("problem", sa.String(length=16), nullable=False),
        sa.Column("seen", sa.Integer(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recognition_unmapped")),
        sa.UniqueConstraint(
            "field",
            "value",
            "hospital_id",
            name=op.f("uq_recognition_unmapped_field_value_hospital_id"),
        ),
    )
    op.create_table(
        "recognition_check",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("public_id", sa.String(length=36), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column(
            "hospital_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("hospital_level", sa.String(length=16), nullable=False),
        sa.Column("department", sa.String(length=128), nullable=False),
        sa.Column("actor_subject", sa.String(length=128), nullable=False),
        sa.Column("resident_id", sa.BigInteger(), nullable=True),
        sa.Column("patient_fk", sa.BigInteger(), nullable=False),
        sa.Column("item_code", sa.String(length=32), nullable=False),
        sa.Column("priors", sa.Integer(), nullable=False),
        sa.Column("prior_uids", sa.Text(), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("reason_text", sa.String(length=256), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(length=128), nullable=False),
        sa.Column("performed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["hospital_id"], ["hospital.id"], name=op.f("fk_recognition_check_hospital_id_hospital")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recognition_check")),
        sa.UniqueConstraint("public_id", name=op.f("uq_recognition_check_public_id")),
    )
    with op.batch_alter_table("recognition_check", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_recognition_check_month_hospital_id"),
            ["month", "hospital_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_recognition_check_resident_id"), ["resident_id"], unique=False
        )

    op.create_table(
        "recognition_code_map",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "hospital_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("procedure_code", sa.String(length=64), nullable=False),
        sa.Column("item_code", sa.String(length=32), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["hospital_id"],
            ["hospital.id"],
            name=op.f("fk_recognition_code_map_hospital_id_hospital"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recognition_code_map")),
        sa.UniqueConstraint(
            "hospital_id",
            "procedure_code",
            name=op.f("uq_recognition_code_map_hospital_id_procedure_code"),
        ),
    )
    op.create_table(
        "study_recognition",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("study_fk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("patient_fk", sa.BigInteger(), nullable=False),
        sa.Column("study_date", sa.String(length=8), nullable=False),
        sa.Column("item_code", sa.String(length=32), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=False),
        sa.Column("body_region", sa.String(length=32), nullable=False),
        sa.Column("procedure", sa.String(length=16), nullable=False),
        sa.Column("rules_version", sa.BigInteger(), nullable=False),
        sa.Column("qc", sa.String(length=8), nullable=False),
        sa.Column("classified_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_fk"], ["study.id"], name=op.f("fk_study_recognition_study_fk_study")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_study_recognition")),
        sa.UniqueConstraint("study_fk", name=op.f("uq_study_recognition_study_fk")),
    )
    with op.batch_alter_table("study_recognition", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_study_recognition_patient_fk_item_code_study_date"),
            ["patient_fk", "item_code", "study_date"],
            unique=False,
        )

    # The rules history is append-only, like the audit trail (0005): UPDATE and DELETE
    # are refused at the database.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("""
            CREATE FUNCTION recognition_change_append_only() RETURNS trigger AS $$
            BEGIN
                RAISE EXCEPTION 'recognition_change is append-only';
            END;
            $$ LANGUAGE plpgsql
        """)
        op.execute("""
            CREATE TRIGGER recognition_change_append_only
            BEFORE UPDATE OR DELETE ON recognition_change
            FOR EACH ROW EXECUTE FUNCTION recognition_change_append_only()
        """)
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(f"""
                CREATE TRIGGER recognition_change_no_{event.lower()} BEFORE {event}
                ON recognition_change
                BEGIN SELECT RAISE(ABORT, 'recognition_change is append-only'); END
            """)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS recognition_change_append_only ON recognition_change")
        op.execute("DROP FUNCTION IF EXISTS recognition_change_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS recognition_change_no_update")
        op.execute("DROP TRIGGER IF EXISTS recognition_change_no_delete")
    with op.batch_alter_table("study_recognition", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_study_recognition_patient_fk_item_code_study_date"))

    op.drop_table("study_recognition")
    op.drop_table("recognition_code_map")
    with op.batch_alter_table("recognition_check", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_recognition_check_resident_id"))
        batch_op.drop_index(batch_op.f("ix_recognition_check_month_hospital_id"))

    op.drop_table("recognition_check")
    op.drop_table("recognition_unmapped")
    op.drop_table("recognition_term")
    op.drop_table("recognition_price")
    op.drop_table("recognition_item")
    op.drop_table("recognition_change")
