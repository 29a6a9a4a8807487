"""The web app: server-rendered pages (Jinja2) over the REST API, with plain JavaScript
modules in `static/` (no build step). `routes.router` serves the pages; `mount_static`
serves `static/` under `/static`."""
