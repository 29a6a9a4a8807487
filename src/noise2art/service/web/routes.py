"""The web app's pages: Search, Library, Jobs, Interpolate, Optimize, Invariant, Explore, Feed.

Each page is a Jinja2 template (autoescaped) that loads one ES module from `/static/js/`;
the module drives the REST API under `/api/v1` with same-origin fetches (the login cookie
travels with them). Pages carry a strict Content-Security-Policy: no inline script or style.
When the server needs credentials and the request has none, a page redirects to `/login`.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from noise2art import __version__
from noise2art.service.security import owner_of

HERE = Path(__file__).parent
TEMPLATES = Jinja2Templates(directory=str(HERE / "templates"))
STATIC = HERE / "static"

CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
           "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin"}

# (path, label, template / script name)
PAGES = [("/", "Search", "search"), ("/library", "Library", "library"), ("/jobs", "Jobs", "jobs"),
         ("/interpolate", "Interpolate", "interpolate"), ("/optimize", "Optimize", "optimize"),
         ("/invariant", "Invariant", "invariant"), ("/explore", "Explore", "explore"), ("/feed", "Feed", "feed")]

router = APIRouter(include_in_schema=False)


def mount_static(app) -> None:
    """Serve the scripts, styles and icons under `/static`."""
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")


def _logged_in(request: Request) -> bool:
    try:
        owner_of(request)
    except HTTPException as exc:
        if exc.status_code == 401:
            return False
        raise
    return True


def _page(name: str, label: str, path: str):
    def page(request: Request, steps: int | None = Query(None, ge=1, le=1000)) -> Response:
        if not _logged_in(request):
            return RedirectResponse("/login", status_code=303, headers={"Cache-Control": "no-store"})
        params = request.query_params
        context = {"page": name, "title": label, "active": path, "nav": PAGES, "version": __version__,
                   "steps": steps, "keep": ("?" + urlencode({"steps": steps})) if steps else "",
                   "q": params.get("q", "")[:2000], "toward": params.get("toward", "")[:200],
                   "liked": params.get("liked") == "true"}
        return TEMPLATES.TemplateResponse(request, f"{name}.html", context, headers=HEADERS)

    page.__name__ = f"page_{name}"
    return page


for _path, _label, _name in PAGES:
    router.add_api_route(_path, _page(_name, _label, _path), methods=["GET"], response_class=Response)


@router.get("/favicon.ico")
def favicon() -> FileResponse:
    """Browsers ask for /favicon.ico on every page (the login form's too): the app's icon."""
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml",
                        headers={"Cache-Control": "public, max-age=86400"})
