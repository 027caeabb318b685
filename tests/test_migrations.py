"""The Alembic migrations build exactly the schema the models describe, on both backends."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from webapp.extensions import db


def test_upgrade_matches_the_models_and_downgrades_cleanly(app):
    with app.app_context():
        db.drop_all()
        upgrade()
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, db.metadata)
        assert differences == []
        downgrade(revision="base")
        with db.engine.connect() as connection:
            names = set(db.inspect(connection).get_table_names())
        assert names <= {"alembic_version"}


def test_the_quota_migration_counts_what_is_already_stored(app):
    """Rows written before the quotas get their stored sizes, so usage counts them at once."""
    import uuid

    import sqlalchemy as sa

    from webapp import quotas
    from webapp.models import utcnow

    with app.app_context():
        db.drop_all()
        upgrade(revision="7d4e1b9a2c55")
        now, script_id = utcnow(), uuid.uuid4()
        logs = [{"time": "2026-12-07T10:00:00.000Z", "level": "log", "message": "é" * 100}]
        tables = {
            "tenants": sa.table("tenants", sa.column("id"), sa.column("name"), sa.column("created_at")),
            "scripts": sa.table(
                "scripts",
                *(sa.column(c) for c in ("tenant_id", "name", "description", "status", "version", "type", "source")),
                *(sa.column(c) for c in ("created_at", "updated_at", "timezone")),
                sa.column("id", sa.Uuid),
            ),
            "executions": sa.table(
                "executions",
                *(sa.column(c) for c in ("tenant_id", "script_version", "trigger", "status", "queued_at")),
                *(sa.column(c, sa.JSON) for c in ("params", "logs", "result")),
                sa.column("error_message"),
                sa.column("id", sa.Uuid),
                sa.column("script_id", sa.Uuid),
            ),
            "storage_items": sa.table(
                "storage_items", *(sa.column(c) for c in ("tenant_id", "key", "value", "updated_at"))
            ),
        }
        db.session.execute(tables["tenants"].insert().values(id=1, name="acme", created_at=now))
        db.session.execute(
            tables["scripts"]
            .insert()
            .values(
                id=script_id, tenant_id=1, name="s", description="", status="active", version=1, type="manual",
                source="function main(){}", created_at=now, updated_at=now, timezone="UTC",
            )
        )  # fmt: skip
        execution = {"params": {"a": 1}, "logs": logs, "result": {"ok": True}, "error_message": "Error: ü"}
        db.session.execute(
            tables["executions"]
            .insert()
            .values(
                id=uuid.uuid4(), script_id=script_id, tenant_id=1, script_version=1, trigger="api", status="failed",
                queued_at=now, **execution,
            )
        )  # fmt: skip
        db.session.execute(tables["storage_items"].insert().values(tenant_id=1, key="k", value='"vé"', updated_at=now))
        db.session.commit()
        upgrade()
        expected = quotas.outcome_size(execution)
        assert db.session.scalar(sa.text("SELECT stored_bytes FROM executions")) == expected
        assert db.session.scalar(sa.text("SELECT size_bytes FROM storage_items")) == len('k"vé"'.encode())
        assert quotas.current(1) == quotas.Usage(len('k"vé"'.encode()), expected)
