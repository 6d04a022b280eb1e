"""Index the image filters and orderings

Revision ID: 5470e650ef97
Revises: d916982f9920
Create Date: 2026-11-27 01:45:50.053356

"""

from alembic import op

revision = "5470e650ef97"
down_revision = "d916982f9920"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_images_content_type"), ["content_type"], unique=False)
        batch_op.create_index(batch_op.f("ix_images_height"), ["height"], unique=False)
        batch_op.create_index("ix_images_size_id", ["size", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_images_width"), ["width"], unique=False)


def downgrade():
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_images_width"))
        batch_op.drop_index("ix_images_size_id")
        batch_op.drop_index(batch_op.f("ix_images_height"))
        batch_op.drop_index(batch_op.f("ix_images_content_type"))
