"""Add bearer tokens, the auth method of trackings, a covering index of image_tags by tag

Revision ID: d916982f9920
Revises: 3667f86bead1
Create Date: 2026-11-27 01:40:05.403329

"""

import sqlalchemy as sa
from alembic import op

import imagestore.models

# revision identifiers, used by Alembic.
revision = "d916982f9920"
down_revision = "3667f86bead1"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", imagestore.models.UTCDateTime(), nullable=False),
        sa.Column("expires_at", imagestore.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_tokens_token_hash")),
    )
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tokens_user_id"), ["user_id"], unique=False)

    with op.batch_alter_table("trackings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("auth_method", sa.String(length=16), nullable=True))

    # "Images having this tag" reads only the index: (tag_id, image_id) replaces (tag_id).
    with op.batch_alter_table("image_tags", schema=None) as batch_op:
        batch_op.create_index("ix_image_tags_tag_id_image_id", ["tag_id", "image_id"], unique=False)
        batch_op.drop_index(batch_op.f("ix_image_tags_tag_id"))


def downgrade():
    with op.batch_alter_table("image_tags", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_image_tags_tag_id"), ["tag_id"], unique=False)
        batch_op.drop_index("ix_image_tags_tag_id_image_id")

    with op.batch_alter_table("trackings", schema=None) as batch_op:
        batch_op.drop_column("auth_method")

    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tokens_user_id"))

    op.drop_table("tokens")
