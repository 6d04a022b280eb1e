"""Store image content by checksum and record its format

Revision ID: d84b0cd5869a
Revises: f60a733c21fe
Create Date: 2026-11-27 01:45:00

"""

import sqlalchemy as sa
from alembic import op

revision = "d84b0cd5869a"
down_revision = "f60a733c21fe"
branch_labels = None
depends_on = None


def upgrade():
    # Identical uploads now share one file, so several rows may name the same key.
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("format", sa.String(length=10), nullable=True))
        batch_op.drop_constraint(batch_op.f("uq_images_file_key"), type_="unique")
    op.execute(
        "UPDATE images SET format = CASE content_type"
        " WHEN 'image/jpeg' THEN 'JPEG' WHEN 'image/png' THEN 'PNG'"
        " WHEN 'image/gif' THEN 'GIF' WHEN 'image/webp' THEN 'WEBP'"
        " WHEN 'image/tiff' THEN 'TIFF' ELSE 'BMP' END"
    )
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.alter_column("format", existing_type=sa.String(length=10), nullable=False)


def downgrade():
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.create_unique_constraint(batch_op.f("uq_images_file_key"), ["file_key"])
        batch_op.drop_column("format")
