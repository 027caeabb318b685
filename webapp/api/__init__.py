"""REST API under /api/v1 (docs/api.md): Bearer token, or session + X-CSRFToken."""
