"""the source a draft run ran (executions.source; null for runs of a saved version)

Revision ID: c9d3e5f7a812
Revises: c9a1f5e7d3b2
Create Date: 2026-12-07 14:10:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'c9d3e5f7a812'
down_revision = 'c9a1f5e7d3b2'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source', sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.drop_column('source')
