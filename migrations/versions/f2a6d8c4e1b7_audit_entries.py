"""audit entries: the append-only audit log (SPEC §15)

Revision ID: f2a6d8c4e1b7
Revises: c9d3e5f7a812
Create Date: 2026-12-07 14:50:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'f2a6d8c4e1b7'
down_revision = 'c9d3e5f7a812'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('audit_entries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor_type', sa.String(length=16), nullable=False),
    sa.Column('actor_user_id', sa.Integer(), nullable=True),
    sa.Column('actor_token_id', sa.Integer(), nullable=True),
    sa.Column('actor_token_label', sa.String(length=100), nullable=True),
    sa.Column('actor_label', sa.String(length=254), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('target_type', sa.String(length=16), nullable=False),
    sa.Column('target_id', sa.String(length=64), nullable=False),
    sa.Column('target_label', sa.String(length=254), nullable=False),
    sa.Column('target_version', sa.Integer(), nullable=True),
    sa.Column('address', sa.String(length=64), nullable=True),
    sa.Column('user_agent', sa.String(length=300), nullable=True),
    sa.Column('changes', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_audit_tenant_time', 'audit_entries', ['tenant_id', 'created_at'])
    op.create_index('ix_audit_tenant_action', 'audit_entries', ['tenant_id', 'action', 'created_at'])
    op.create_index('ix_audit_tenant_actor', 'audit_entries', ['tenant_id', 'actor_label', 'created_at'])
    op.create_index('ix_audit_tenant_target', 'audit_entries', ['tenant_id', 'target_id', 'created_at'])
    op.create_index('ix_audit_time', 'audit_entries', ['created_at'])


def downgrade():
    op.drop_table('audit_entries')
