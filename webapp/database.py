"""Database engine tuning: SQLite set up for several writing processes; connection options."""

from flask import Flask
from sqlalchemy import event

from webapp.extensions import db


def engine_options(url: str) -> dict:
    if url.startswith("sqlite"):
        # Several processes write at once: wait for the lock instead of failing at once.
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}
    # A database host that does not answer must fail a request in seconds, not hang a thread
    # for the system's TCP timeout.
    return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 3}}


def configure(app: Flask) -> None:
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        return
    with app.app_context():
        engine = db.engine
    event.listen(engine, "connect", _sqlite_pragmas)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
