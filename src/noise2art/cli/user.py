"""`noise2art user add NAME`: a named user of the service (password hashed with argon2)."""

from __future__ import annotations

import sys

from noise2art.errors import InvalidArgument

NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def register(subparsers) -> None:
    p = subparsers.add_parser("user", help="manage the service's named users",
                              description="Named users see only their own jobs, images, sessions and likes.")
    sub = p.add_subparsers(dest="user_command", metavar="SUBCOMMAND", required=True)
    a = sub.add_parser("add", help="add a user, or set an existing user's password")
    a.add_argument("name", help="user name: letters, digits, '_', '.', '-' (1-64 characters)")
    a.add_argument("--data", default=None, help="data folder (default: the user's data folder)")
    a.add_argument("--password-stdin", action="store_true", help="read the password from stdin instead of asking")
    a.set_defaults(func=run_add)


def check_name(name: str) -> str:
    if not 1 <= len(name) <= 64 or not set(name) <= NAME_CHARS:
        raise InvalidArgument("name", "use 1-64 letters, digits, '_', '.' or '-'")
    return name


def run_add(args) -> int:
    import getpass
    from pathlib import Path

    from noise2art.service.config import default_data_dir
    from noise2art.service.security import hash_password
    from noise2art.store import Store

    name = check_name(args.name)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != password:
            raise InvalidArgument("password", "the two entries differ")
    if len(password) < 8:
        raise InvalidArgument("password", "must be at least 8 characters")
    store = Store(Path(args.data).expanduser() if args.data else default_data_dir())
    try:
        store.add_user(name, hash_password(password))
    finally:
        store.close()
    print(f"user {name} saved in {store.root}")
    return 0
