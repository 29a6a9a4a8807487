"""The routers: `api` (the REST API under /api/v1) and `pages` (the login form)."""
