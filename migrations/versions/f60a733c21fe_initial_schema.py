"""Create users, tags, images, image_tags and trackings

Revision ID: f60a733c21fe
Revises:
Create Date: 2026-11-27 01:08:21.907550

"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import imagestore.models

# revision identifiers, used by Alembic.
revision = "f60a733c21fe"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=150), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", imagestore.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("file_key", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=50), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", imagestore.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["users.id"], name=op.f("fk_images_created_by_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint("file_key", name=op.f("uq_images_file_key")),
    )
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.create_index("ix_images_created_at_id", ["created_at", "id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_images_created_by_id"), ["created_by_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_images_sha256"), ["sha256"], unique=False)

    op.create_table(
        "tags",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("name_folded", sa.String(length=200), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", imagestore.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["users.id"], name=op.f("fk_tags_created_by_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tags")),
        sa.UniqueConstraint("name_folded", name=op.f("uq_tags_name_folded")),
    )
    with op.batch_alter_table("tags", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tags_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_tags_created_by_id"), ["created_by_id"], unique=False)

    op.create_table(
        "trackings",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("username", sa.String(length=150), nullable=True),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("endpoint", sa.String(length=1024), nullable=False),
        sa.Column(
            "query",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("duration_ms", sa.Double(), nullable=False),
        sa.Column("remote_addr", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=512), nullable=True),
        sa.Column(
            "headers",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "response",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.Column("created_at", imagestore.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_trackings_user_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trackings")),
    )
    with op.batch_alter_table("trackings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_trackings_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_trackings_endpoint"), ["endpoint"], unique=False)
        batch_op.create_index(batch_op.f("ix_trackings_method"), ["method"], unique=False)
        batch_op.create_index(batch_op.f("ix_trackings_status_code"), ["status_code"], unique=False)
        batch_op.create_index(batch_op.f("ix_trackings_user_id"), ["user_id"], unique=False)

    op.create_table(
        "image_tags",
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("tag_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_image_tags_image_id_images"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tag_id"], ["tags.id"], name=op.f("fk_image_tags_tag_id_tags"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("image_id", "tag_id", name=op.f("pk_image_tags")),
    )
    with op.batch_alter_table("image_tags", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_image_tags_tag_id"), ["tag_id"], unique=False)


def downgrade():

    with op.batch_alter_table("image_tags", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_image_tags_tag_id"))

    op.drop_table("image_tags")
    with op.batch_alter_table("trackings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trackings_user_id"))
        batch_op.drop_index(batch_op.f("ix_trackings_status_code"))
        batch_op.drop_index(batch_op.f("ix_trackings_method"))
        batch_op.drop_index(batch_op.f("ix_trackings_endpoint"))
        batch_op.drop_index(batch_op.f("ix_trackings_created_at"))

    op.drop_table("trackings")
    with op.batch_alter_table("tags", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tags_created_by_id"))
        batch_op.drop_index(batch_op.f("ix_tags_created_at"))

    op.drop_table("tags")
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_images_sha256"))
        batch_op.drop_index(batch_op.f("ix_images_created_by_id"))
        batch_op.drop_index("ix_images_created_at_id")

    op.drop_table("images")
    op.drop_table("users")
