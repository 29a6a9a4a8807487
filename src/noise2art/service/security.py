"""Safe by default: who may call the API, from where, and as whom.

- **Bind address.** `ServiceConfig.check` refuses a non-loopback address without a token.
- **Authentication.** With a token, or once named users exist, every API call needs one
  of: `Authorization: Bearer <token>` (the server token, or a login token from
  `POST /api/v1/login`), or the `noise2art_session` cookie (HttpOnly, SameSite=Strict) the
  login form sets. Without either (loopback, no token, no users) the API is open.
- **Owners.** A named user's requests act as that user: they see only their own jobs,
  images, sessions and likes. The server token acts as the shared owner "".
- **Host allow-list** (DNS rebinding): a request whose `Host` is not the server's gets 400.
- **Origin**: a state-changing request or an event stream from a foreign `Origin` gets 403
  (a cross-site page cannot drive the API with the user's cookie); no CORS unless
  `cors_origins` names origins.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import HTTPException, Request

COOKIE = "noise2art_session"
LOGIN_LIFETIME_S = 14 * 24 * 3600.0
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
OPEN_PATHS = ("/api/v1/health", "/api/v1/login", "/login", "/openapi.json", "/docs", "/docs/oauth2-redirect")


def hash_token(token: str) -> str:
    """Login tokens are stored hashed: a copy of the database does not log anyone in."""
    return hashlib.sha256(token.encode()).hexdigest()


def password_hasher():
    from argon2 import PasswordHasher

    return PasswordHasher()


def hash_password(password: str) -> str:
    return password_hasher().hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

    try:
        return password_hasher().verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def new_login(store, user: str) -> str:
    token = secrets.token_urlsafe(32)
    store.add_login(hash_token(token), user, LOGIN_LIFETIME_S)
    return token


class SecurityMiddleware:
    """ASGI middleware: the Host allow-list and the Origin check, before any route runs."""

    def __init__(self, app, *, hosts: list[str], cors_origins: list[str]):
        self.app = app
        self.hosts = {h.lower() for h in hosts}
        self.cors_origins = set(cors_origins)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "").lower()
        if host not in self.hosts:
            return await _plain(send, 400, "invalid Host header")
        origin = headers.get("origin")
        path = scope.get("path", "")
        streams = path.endswith("/events")
        if origin and (scope["method"] not in SAFE_METHODS or streams):
            same = origin.lower() in (f"http://{host}", f"https://{host}")
            if not same and origin not in self.cors_origins:
                return await _plain(send, 403, "cross-origin request refused")
        return await self.app(scope, receive, send)


async def _plain(send, status: int, text: str) -> None:
    body = ('{"detail": "%s"}' % text).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def auth_required(request: Request) -> bool:
    state = request.app.state
    return bool(state.config.token) or state.store.has_users()


async def request_owner(request: Request) -> str:
    """The routes' dependency for `owner_of`. A coroutine, so it runs on the event loop: two
    indexed SQLite reads at most, cheaper than the hop to a worker thread that a plain
    function dependency costs on every request."""
    return owner_of(request)


def owner_of(request: Request) -> str:
    """The owner a request acts as; 401 when the server needs credentials and got none."""
    state = request.app.state
    if not auth_required(request):
        return ""
    token = None
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        token = header[7:].strip()
    if token is None:
        token = request.cookies.get(COOKIE)
    if token:
        if state.config.token and hmac.compare_digest(token.encode(), state.config.token.encode()):
            return ""
        user = state.store.login_user(hash_token(token))
        if user is not None:
            return user
    raise HTTPException(401, "log in first: send Authorization: Bearer <token>, or log in at /login",
                        headers={"WWW-Authenticate": "Bearer"})


def check_login(store, config, name: str, password: str) -> str | None:
    """The owner a name and password log in as, or None. Named users log in with their own
    password; the server token logs in as the shared owner ""."""
    if name:
        user = store.get_user(name)
        if user is not None and verify_password(user["password_hash"], password):
            return name
        return None
    if config.token and hmac.compare_digest(password.encode(), config.token.encode()):
        return ""
    return None
