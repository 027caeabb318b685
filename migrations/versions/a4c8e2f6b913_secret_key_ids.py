"""secrets.key_id: the id of the key that encrypted each value (checked at every start)

Rows stored before it have none (NULL): the start check decrypts one of them instead, and
`flask secrets rotate-key` fills them in (docs/secrets.md, "Keys").

Revision ID: a4c8e2f6b913
Revises: f2a6d8c4e1b7
Create Date: 2026-12-07 15:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a4c8e2f6b913'
down_revision = 'f2a6d8c4e1b7'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('secrets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('key_id', sa.String(length=16), nullable=True))


def downgrade():
    with op.batch_alter_table('secrets', schema=None) as batch_op:
        batch_op.drop_column('key_id')
