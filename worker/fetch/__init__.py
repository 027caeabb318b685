"""Outbound HTTP for scripts (`fetch`, SPEC §12): the guard, the pinned client, per-run limits.

docs/fetch-guard.md describes what the guard refuses and every message.
"""
