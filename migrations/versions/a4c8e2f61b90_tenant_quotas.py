"""tenant quotas: stored sizes of executions and storage items, and each tenant's usage

Revision ID: a4c8e2f61b90
Revises: 7d4e1b9a2c55
Create Date: 2026-12-08 09:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a4c8e2f61b90'
down_revision = '7d4e1b9a2c55'
branch_labels = None
depends_on = None


def _bytes(column: str, dialect: str) -> str:
    """The byte length of a column's stored text, 0 for NULL."""
    if dialect == 'postgresql':
        return f"COALESCE(octet_length({column}::text), 0)"
    return f"COALESCE(length(CAST({column} AS BLOB)), 0)"


def upgrade():
    op.create_table('tenant_usage',
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('storage_bytes', sa.BigInteger(), nullable=False),
    sa.Column('execution_bytes', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('tenant_id')
    )
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stored_bytes', sa.Integer(), server_default='0', nullable=False))

    with op.batch_alter_table('storage_items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('size_bytes', sa.Integer(), server_default='0', nullable=False))

    # What is already stored counts from now on; tenant_usage rows are made on first use from
    # these sizes (webapp/quotas.py).
    dialect = op.get_bind().dialect.name
    execution_size = " + ".join(
        _bytes(c, dialect) for c in ('params', 'logs', 'result', 'error_message')
    )
    op.execute(f"UPDATE executions SET stored_bytes = {execution_size}")
    op.execute(f"UPDATE storage_items SET size_bytes = {_bytes('key', dialect)} + {_bytes('value', dialect)}")


def downgrade():
    with op.batch_alter_table('storage_items', schema=None) as batch_op:
        batch_op.drop_column('size_bytes')

    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.drop_column('stored_bytes')

    op.drop_table('tenant_usage')
