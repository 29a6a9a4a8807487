"""`noise2art store check`: verify a data folder (every row's file and hash), optionally repair."""

from __future__ import annotations

import sys
from pathlib import Path

from noise2art.cli.common import emit_json
from noise2art.errors import InvalidArgument


def register(subparsers) -> None:
    p = subparsers.add_parser("store", help="check a service data folder",
                              description="Commands on the data folder of `noise2art serve`.")
    sub = p.add_subparsers(dest="store_command", metavar="SUBCOMMAND", required=True)
    c = sub.add_parser("check", help="verify that every row has its file with the right hash",
                       description="Verify every image, embedding and render row against its file (present, "
                                   "sha256 matching) and list files no row names. Exits 1 on any inconsistency.")
    c.add_argument("--data", default=None, help="data folder (default: the user's data folder)")
    c.add_argument("--repair", action="store_true",
                   help="remove unreferenced and temporary files (only those older than 10 minutes while a "
                        "server may be writing)")
    c.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    c.set_defaults(func=run_check)


def data_folder(value: str | None) -> Path:
    from noise2art.service.config import default_data_dir

    folder = Path(value).expanduser() if value else default_data_dir()
    if not (folder / "store.sqlite3").is_file():
        raise InvalidArgument("data", f"'{folder}' holds no noise2art store")
    return folder


def run_check(args) -> int:
    from noise2art.store import Store

    store = Store(data_folder(args.data))
    try:
        report = store.check(repair=args.repair)
    finally:
        store.close()
    if args.json:
        emit_json(report.to_dict())
    else:
        for line in report.problems:
            print(f"problem: {line}", file=sys.stderr)
        verb = "removed" if args.repair else "unreferenced"
        for path in report.orphans:
            print(f"{verb}: {path}", file=sys.stderr)
        state = "ok" if report.ok else "INCONSISTENT"
        print(f"{state}: {report.rows} rows, {report.files} files, {len(report.problems)} problems, "
              f"{len(report.orphans)} {verb} files, {len(report.temporary)} temporary files")
    return 0 if report.ok else 1
