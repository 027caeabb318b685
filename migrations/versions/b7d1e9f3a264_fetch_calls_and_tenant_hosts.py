"""executions.http_calls (what a run's fetch calls were) and tenants.fetch_allowed_hosts
(a tenant's allowlist of host patterns for fetch; NULL: no allowlist)

Revision ID: b7d1e9f3a264
Revises: a4c8e2f6b913
Create Date: 2026-12-07 17:10:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b7d1e9f3a264'
down_revision = 'a4c8e2f6b913'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('http_calls', sa.JSON(), nullable=True))
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fetch_allowed_hosts', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.drop_column('fetch_allowed_hosts')
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.drop_column('http_calls')
