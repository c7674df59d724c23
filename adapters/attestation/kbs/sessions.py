"""RCAR sessions in the KBS database, so every replica sees every session.

A session is created by ``/auth`` (state ``authed``, holding the challenge nonce) and consumed by
``/attest``: the move to ``attested`` is one conditional UPDATE (``WHERE state = 'authed' AND
nonce = :nonce``), so a nonce is good for exactly one attestation even when two replicas race.
Expired rows never match; ``housekeeping.Housekeeper`` deletes them in the background.

Sessions this process created or attested are also kept in a bounded in-memory map (write-through),
which saves the database read on the hot path; a miss - or an ``authed`` entry that another replica
may have attested since - reads the database. The database stays the only authority for the
``authed -> attested`` transition.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy import Engine

from .errors import NonceInvalid, SessionInvalid
from .hotsql import HotSql

DEFAULT_TIMEOUT_S = 300.0
_SESSION_ID_LEN = 32
_CACHE_SIZE = 4096  # in-flight sessions; a miss reads the database (and keeps GC pauses short)


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


# The hot statements, as plain SQL (see ``hotsql.py``); columns as ``db.sessions``.
_INSERT = (
    "INSERT INTO kbs_sessions (id, tee, nonce, hash_alg, state, token, expires_at) "
    "VALUES (?, ?, ?, ?, 'authed', NULL, ?)"
)
_SELECT = "SELECT id, tee, nonce, hash_alg, state, token, expires_at FROM kbs_sessions WHERE id = ?"
# Consuming the nonce: one conditional UPDATE; a row count of 1 is the proof it was still unused.
_CONSUME = (
    "UPDATE kbs_sessions SET state = 'attested', token = ? "
    "WHERE id = ? AND state = 'authed' AND nonce = ? AND expires_at > ?"
)


class SessionStore:
    """Create, read and consume sessions. Each call is one short transaction."""

    def __init__(self, engine: Engine, timeout_s: float = DEFAULT_TIMEOUT_S, sql: HotSql | None = None) -> None:
        self._sql = sql if sql is not None else HotSql(engine)
        self.timeout_s = timeout_s
        self._cache: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def _remember(self, sess: Session) -> None:
        with self._lock:
            self._cache[sess.id] = sess
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)

    def create(self, tee: str, hash_alg: str) -> Session:
        expires_at = time.time() + self.timeout_s
        sess = Session(uuid.uuid4().hex, tee, new_nonce(), hash_alg, "authed", None, expires_at)
        self._sql.write(_INSERT, (sess.id, tee, sess.nonce, hash_alg, sess.expires_at))
        self._remember(sess)
        return sess

    def get(self, session_id: str | None, need_attested: bool = False) -> Session:
        """The live session with this id; ``SessionInvalid`` if absent, malformed or expired.

        ``need_attested``: a cached ``authed`` entry is re-read (another replica may have attested).
        """
        if not session_id or len(session_id) != _SESSION_ID_LEN or not session_id.isalnum():
            raise SessionInvalid("no valid session cookie; start with POST /kbs/v0/auth.")
        with self._lock:
            sess = self._cache.get(session_id)
        if sess is None or (need_attested and not sess.attested):
            row = self._sql.one(_SELECT, (session_id,))
            if row is None:
                raise SessionInvalid("session is unknown or expired; start again with POST /kbs/v0/auth.")
            sess = Session(*row)
        if sess.expires_at <= time.time():
            raise SessionInvalid("session is unknown or expired; start again with POST /kbs/v0/auth.")
        return sess

    def close(self) -> None:
        self._sql.close()

    def mark_attested(self, session: Session, nonce: str, token: str) -> Session:
        """Consume the nonce: succeeds once per session, for the session's own nonce only."""
        if self._sql.write(_CONSUME, (token, session.id, nonce, time.time())) != 1:
            raise NonceInvalid("the challenge nonce was already used or has expired; start again with /auth.")
        attested = Session(
            session.id, session.tee, session.nonce, session.hash_alg, "attested", token, session.expires_at
        )
        self._remember(attested)
        return attested
