"""user session version (logout ends every session of the user)

Revision ID: 3f6d2a9c8e71
Revises: 1c2cd799f12c
Create Date: 2026-11-27 08:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '3f6d2a9c8e71'
down_revision = '1c2cd799f12c'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_version', sa.Integer(), server_default='0', nullable=False))


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('session_version')
