"""Outbound HTTP for scripts (`fetch`, docs/fetch-guard.md): the guard, the pinned client, per-run limits.

docs/fetch-guard.md describes what the guard refuses and every message.
"""
