"""Resource storage: values sealed by the KMS (AAD = the resource path) in the KBS database.

Writes are all-or-nothing: the value is sealed first, then written in one transaction; a KMS
failure leaves the database untouched. Reads open the blob; nothing here ever logs a value.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update

from adapters.kms import Kms

from ..protocol import ResourcePath
from . import db
from .errors import ResourceNotFound
from .hotsql import HotSql

MAX_RESOURCE_BYTES = 1024 * 1024
_GET_BLOB = "SELECT blob FROM kbs_resources WHERE path = ?"  # per release: plain SQL (hotsql.py)


class ResourceStore:
    def __init__(self, engine: Engine, kms: Kms, sql: HotSql | None = None) -> None:
        self._engine = engine
        self._sql = sql if sql is not None else HotSql(engine)
        self.kms = kms

    def close(self) -> None:
        self._sql.close()

    def put(self, path: ResourcePath, value: bytes) -> dict[str, Any]:
        blob = self.kms.seal(value, str(path).encode())
        row = {
            "path": str(path),
            "blob": blob,
            "kms": self.kms.backend,
            "key_id": self.kms.active_key_id,
            "size": len(value),
            "updated_at": time.time(),
        }
        with self._engine.begin() as conn:
            conn.execute(delete(db.resources).where(db.resources.c.path == str(path)))
            conn.execute(insert(db.resources).values(**row))
        return {k: row[k] for k in ("path", "kms", "key_id", "size")}

    def get(self, path: ResourcePath) -> bytes:
        row = self._sql.one(_GET_BLOB, (str(path),))
        blob = bytes(row[0]) if row is not None else None
        if blob is None:
            raise ResourceNotFound(f"resource {path} does not exist on this KBS.")
        return self.kms.open(blob, str(path).encode())

    def delete(self, path: ResourcePath) -> None:
        with self._engine.begin() as conn:
            res = conn.execute(delete(db.resources).where(db.resources.c.path == str(path)))
        if res.rowcount == 0:
            raise ResourceNotFound(f"resource {path} does not exist on this KBS.")

    def list(self) -> list[dict[str, Any]]:
        cols = [
            db.resources.c.path,
            db.resources.c.kms,
            db.resources.c.key_id,
            db.resources.c.size,
            db.resources.c.updated_at,
        ]
        with self._engine.connect() as conn:
            rows = conn.execute(select(*cols).order_by(db.resources.c.path)).all()
        return [dict(r._mapping) for r in rows]

    def rotate(self) -> dict[str, Any]:
        """New KMS wrapping key, then every resource's DEK re-wrapped under it (one transaction)."""
        kid = self.kms.rotate()
        with self._engine.begin() as conn:
            rows = conn.execute(select(db.resources.c.path, db.resources.c.blob)).all()
            for row in rows:
                conn.execute(
                    update(db.resources)
                    .where(db.resources.c.path == row.path)
                    .values(blob=self.kms.rewrap(row.blob), key_id=kid)
                )
            keys = conn.execute(select(db.token_keys.c.kid, db.token_keys.c.sealed_key)).all()
            for key in keys:
                conn.execute(
                    update(db.token_keys)
                    .where(db.token_keys.c.kid == key.kid)
                    .values(sealed_key=self.kms.rewrap(key.sealed_key))
                )
        return {"active_key_id": kid, "rewrapped": len(rows) + len(keys)}
