"""The web application factory: settings, extensions, request hooks, blueprints, CLI."""

from flask import Flask

from webapp import (
    cron_registry,
    database,
    errors,
    http_metrics,
    redis_client,
    request_guard,
    security_headers,
    templating,
)
from webapp.admin.views import bp as admin_bp
from webapp.api.routes import bp as api_bp
from webapp.audit.views import bp as audit_bp
from webapp.auth import identity, tokens
from webapp.auth.views import bp as auth_bp
from webapp.cli import register_cli
from webapp.client_address import ClientAddressMiddleware, TrustedProxies
from webapp.config import INSTANCE_DIR, Settings
from webapp.dashboard.views import bp as dashboard_bp
from webapp.endpoints import router as endpoint_router
from webapp.endpoints.views import bp as endpoints_bp
from webapp.executions.draft_views import bp as drafts_bp
from webapp.executions.views import bp as executions_bp
from webapp.extensions import csrf, db, login_manager, migrate
from webapp.health import bp as health_bp
from webapp.invitations.views import bp as invitations_bp
from webapp.metrics import bp as metrics_bp
from webapp.scripts.views import bp as scripts_bp
from webapp.secret_store.keys import SECRET_KEYS, SecretKeys
from webapp.secret_store.views import bp as secrets_bp
from webapp.storage.views import bp as storage_bp


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    keys = SecretKeys(settings.secrets_key)  # first: a bad SECRETS_KEY stops every process here
    app = Flask(
        "webapp",  # the app and its logger are named for the package
        instance_path=str(INSTANCE_DIR),
        template_folder="../templates",
        static_folder="../static",
    )
    app.extensions[SECRET_KEYS] = keys
    app.config.update(
        SETTINGS=settings,
        SECRET_KEY=settings.secret_key,
        SQLALCHEMY_DATABASE_URI=settings.database_url,
        SQLALCHEMY_ENGINE_OPTIONS=database.engine_options(settings.database_url),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        WTF_CSRF_TIME_LIMIT=None,
        WTF_CSRF_SSL_STRICT=False,
        MAX_CONTENT_LENGTH=8 * 1024 * 1024,
    )

    # Before Flask sees the request: every hook and view reads the client's address.
    app.wsgi_app = ClientAddressMiddleware(app.wsgi_app, TrustedProxies(settings.forwarded_allow_ips))

    http_metrics.init_app(app)  # first: its timer then spans every other request hook
    db.init_app(app)
    migrate.init_app(app, db, directory=str(INSTANCE_DIR.parent / "migrations"), render_as_batch=True)
    csrf.init_app(app)
    login_manager.init_app(app)
    database.configure(app)
    redis_client.init_app(app)
    errors.init_app(app)
    security_headers.init_app(app)
    request_guard.init_app(app)
    identity.init_app(app)
    tokens.init_app(app)
    for blueprint in (
        health_bp,
        auth_bp,
        dashboard_bp,
        scripts_bp,
        executions_bp,
        storage_bp,
        drafts_bp,
        admin_bp,
        secrets_bp,
        audit_bp,
        invitations_bp,
        api_bp,
        endpoints_bp,
        metrics_bp,
    ):
        app.register_blueprint(blueprint)
    register_cli(app)
    cron_registry.init_app(app)
    endpoint_router.init_app(app)
    templating.init_app(app)
    return app
