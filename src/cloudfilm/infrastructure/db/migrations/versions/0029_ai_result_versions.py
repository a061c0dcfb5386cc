"""AI result versions and the reviewing doctor's name: a re-run of an algorithm on a study
is a new workitem (``run`` 2, 3, ...) whose results are a new version; earlier versions
are kept and marked superseded

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-04 02:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("ai_workitem") as batch:
        batch.add_column(sa.Column("run", sa.Integer(), nullable=False, server_default="1"))
        batch.drop_constraint("uq_ai_workitem_algorithm_id_study_instance_uid",
                              type_="unique")
        batch.create_unique_constraint(
            "uq_ai_workitem_algorithm_id_study_instance_uid_run",
            ["algorithm_id", "study_instance_uid", "run"])
    with op.batch_alter_table("ai_result") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False,
                                   server_default="1"))
        batch.add_column(sa.Column("superseded_at", _TS, nullable=True))
        batch.add_column(sa.Column("reviewer_name", sa.String(128), nullable=False,
                                   server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("ai_result") as batch:
        batch.drop_column("reviewer_name")
        batch.drop_column("superseded_at")
        batch.drop_column("version")
    op.execute("DELETE FROM ai_result WHERE workitem_id IN "
               "(SELECT id FROM ai_workitem WHERE run > 1)")
    op.execute("DELETE FROM ai_workitem WHERE run > 1")
    with op.batch_alter_table("ai_workitem") as batch:
        batch.drop_constraint("uq_ai_workitem_algorithm_id_study_instance_uid_run",
                              type_="unique")
        batch.create_unique_constraint("uq_ai_workitem_algorithm_id_study_instance_uid",
                                       ["algorithm_id", "study_instance_uid"])
        batch.drop_column("run")
