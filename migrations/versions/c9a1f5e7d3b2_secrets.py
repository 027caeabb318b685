"""secrets: a tenant's encrypted values, and the names each execution read

Revision ID: c9a1f5e7d3b2
Revises: e3b7c1d94a20
Create Date: 2026-12-07 14:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'c9a1f5e7d3b2'
down_revision = 'e3b7c1d94a20'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('secrets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('token', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['updated_by_id'], ['users.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_id', 'name', name='uq_secrets_tenant_name')
    )
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('secrets_read', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.drop_column('secrets_read')
    op.drop_table('secrets')
