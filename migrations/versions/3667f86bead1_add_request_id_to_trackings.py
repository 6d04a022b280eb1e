"""Add request_id to trackings

Revision ID: 3667f86bead1
Revises: d84b0cd5869a
Create Date: 2026-11-27 01:39:50.889005

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "3667f86bead1"
down_revision = "d84b0cd5869a"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("trackings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_id", sa.String(length=128), nullable=True))

    if op.get_bind().dialect.name == "postgresql":
        # Built without locking out the tracking inserts of the version still serving.
        with op.get_context().autocommit_block():
            op.create_index(
                op.f("ix_trackings_request_id"),
                "trackings",
                ["request_id"],
                unique=False,
                postgresql_concurrently=True,
            )
    else:
        op.create_index(op.f("ix_trackings_request_id"), "trackings", ["request_id"], unique=False)


def downgrade():
    op.drop_index(op.f("ix_trackings_request_id"), table_name="trackings")
    with op.batch_alter_table("trackings", schema=None) as batch_op:
        batch_op.drop_column("request_id")
