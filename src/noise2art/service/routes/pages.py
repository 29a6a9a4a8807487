"""Pages a browser opens directly: the login form (the web app builds on the API)."""

from __future__ import annotations

import html

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from noise2art.service.security import COOKIE, LOGIN_LIFETIME_S, check_login, new_login

router = APIRouter(include_in_schema=False)

FORM = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>noise2art: log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:22rem;margin:4rem auto;padding:0 1rem}}
label{{display:block;margin:.8rem 0 .2rem}}input{{width:100%;padding:.4rem;box-sizing:border-box}}
button{{margin-top:1rem;padding:.5rem 1.2rem}}.error{{color:#b00020}}</style></head>
<body><h1>noise2art</h1>{message}
<form method="post" action="/login">
<label for="name">Name (leave empty to log in with the server token)</label>
<input id="name" name="name" autocomplete="username">
<label for="password">Password or token</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Log in</button></form></body></html>"""

HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
           "Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'"}


@router.get("/login", response_class=HTMLResponse)
def login_form() -> HTMLResponse:
    return HTMLResponse(FORM.format(message=""), headers=HEADERS)


@router.post("/login", response_class=HTMLResponse)
def login_submit(request: Request, name: str = Form("", max_length=64), password: str = Form(max_length=1024)):
    state = request.app.state
    owner = check_login(state.store, state.config, name, password)
    if owner is None:
        message = f'<p class="error">Wrong name or password{" for " + html.escape(name) if name else ""}.</p>'
        return HTMLResponse(FORM.format(message=message), status_code=401, headers=HEADERS)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, new_login(state.store, owner), max_age=int(LOGIN_LIFETIME_S), httponly=True,
                        samesite="strict", secure=request.url.scheme == "https", path="/")
    return response
