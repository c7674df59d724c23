"""RCAR sessions in the KBS database, so every replica sees every session.

A session is created by ``/auth`` (state ``authed``, holding the challenge nonce) and consumed by
``/attest``: the move to ``attested`` is one conditional UPDATE (``WHERE state = 'authed' AND
nonce = :nonce``), so a nonce is good for exactly one attestation even when two replicas race.
Expired rows never match and are purged lazily.
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import Engine, and_, delete, insert, select, update

from . import db
from .errors import NonceInvalid, SessionInvalid

DEFAULT_TIMEOUT_S = 300.0
_SESSION_ID_LEN = 32


@dataclass(frozen=True)
class Session:
    id: str
    tee: str
    nonce: str
    hash_alg: str
    state: str
    token: str | None
    expires_at: float

    @property
    def attested(self) -> bool:
        return self.state == "attested"


def new_nonce() -> str:
    """32 random bytes, standard padded base64 (44 chars), as trustee's ``make_nonce``."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


class SessionStore:
    """Create, read and consume sessions. Each call is one short transaction."""

    def __init__(self, engine: Engine, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._engine = engine
        self.timeout_s = timeout_s
        self._last_purge = 0.0

    def create(self, tee: str, hash_alg: str) -> Session:
        now = time.time()
        sess = Session(uuid.uuid4().hex, tee, new_nonce(), hash_alg, "authed", None, now + self.timeout_s)
        with self._engine.begin() as conn:
            conn.execute(
                insert(db.sessions).values(
                    id=sess.id,
                    tee=sess.tee,
                    nonce=sess.nonce,
                    hash_alg=hash_alg,
                    state="authed",
                    token=None,
                    expires_at=sess.expires_at,
                )
            )
            if now - self._last_purge > 30:
                self._last_purge = now
                conn.execute(delete(db.sessions).where(db.sessions.c.expires_at < now - 60))
        return sess

    def get(self, session_id: str | None) -> Session:
        """The live session with this id; ``SessionInvalid`` if absent, malformed or expired."""
        if not session_id or len(session_id) != _SESSION_ID_LEN or not session_id.isalnum():
            raise SessionInvalid("no valid session cookie; start with POST /kbs/v0/auth.")
        with self._engine.connect() as conn:
            row = conn.execute(select(db.sessions).where(db.sessions.c.id == session_id)).first()
        if row is None or row.expires_at <= time.time():
            raise SessionInvalid("session is unknown or expired; start again with POST /kbs/v0/auth.")
        return Session(row.id, row.tee, row.nonce, row.hash_alg, row.state, row.token, row.expires_at)

    def mark_attested(self, session: Session, nonce: str, token: str) -> None:
        """Consume the nonce: succeeds once per session, for the session's own nonce only."""
        with self._engine.begin() as conn:
            res = conn.execute(
                update(db.sessions)
                .where(
                    and_(
                        db.sessions.c.id == session.id,
                        db.sessions.c.state == "authed",
                        db.sessions.c.nonce == nonce,
                        db.sessions.c.expires_at > time.time(),
                    )
                )
                .values(state="attested", token=token)
            )
        if res.rowcount != 1:
            raise NonceInvalid("the challenge nonce was already used or has expired; start again with /auth.")
