"""The service's store: SQLite rows and content-addressed files in one data folder (`Store`)."""

from noise2art.store.store import CheckReport, Store, decode_cursor, encode_cursor, new_id

__all__ = ["CheckReport", "Store", "decode_cursor", "encode_cursor", "new_id"]
