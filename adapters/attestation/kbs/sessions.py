"""RCAR sessions: stateless challenges, attested sessions in the KBS database.

``/auth`` writes nothing. The session id (the cookie, 32 lowercase hex characters as trustee's
UUIDs) carries what ``/attest`` needs - 9 random bytes, the expiry in milliseconds (6 bytes) and
the TEE (1 byte) - and the challenge nonce is an HMAC of the id under a key every replica derives
from the shared token-signing key. So the nonce is unpredictable, bound to its session, TEE and
expiry, and any replica can check it; an unauthenticated ``/auth`` costs no database write (each
used to add a row, and 14 KB of SQLite WAL). On the wire nothing changes: the nonce is still 32
bytes in padded base64 (44 characters), opaque to clients (PROTOCOLS §1.4).

``/attest`` consumes the nonce by *inserting* the attested session (``ON CONFLICT DO NOTHING``): a
row count of 1 is the proof it was unused, so a nonce is good for exactly one attestation even when
two replicas race. Expired rows never match; ``housekeeping.Housekeeper`` deletes them.

Sessions this process attested are also kept in a bounded in-memory map (write-through), which
saves the database read on the resource request; a miss reads the database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy import Engine

from .errors import NonceInvalid, SessionInvalid
from .hotsql import HotSql

DEFAULT_TIMEOUT_S = 300.0
_CACHE_SIZE = 4096  # attested sessions; a miss reads the database (and keeps GC pauses short)
_ID = re.compile(r"[0-9a-f]{32}")
TEE_CODES: dict[str, int] = {"sample": 1, "sim": 2}
"""TEEs a session id can name, by their one-byte code. Append only: replicas must agree."""
_TEE_OF = {code: tee for tee, code in TEE_CODES.items()}
_NONCE_DOMAIN = b"enclaveflow-kbs rcar nonce v1|"
HASH_ALG = "sha384"  # the runtime-data hash of every non-SE TEE (PROTOCOLS §1.6)


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


def nonce_key(token_key_der: bytes) -> bytes:
    """The challenge HMAC key, derived from the token-signing key (PKCS#8 DER) all replicas share."""
    return hashlib.sha256(b"enclaveflow-kbs nonce key v1|" + token_key_der).digest()


_INSERT_ATTESTED = (
    "INSERT INTO kbs_sessions (id, tee, nonce, hash_alg, state, token, expires_at) "
    "VALUES (?, ?, ?, ?, 'attested', ?, ?) ON CONFLICT (id) DO NOTHING"
)
_SELECT = "SELECT id, tee, nonce, hash_alg, state, token, expires_at FROM kbs_sessions WHERE id = ?"


class SessionStore:
    """Issue challenges (no I/O), consume them (one INSERT) and read attested sessions."""

    def __init__(
        self,
        engine: Engine,
        key: bytes,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        sql: HotSql | None = None,
        read_sql: HotSql | None = None,
    ) -> None:
        self._sql = sql if sql is not None else HotSql(engine)
        self._read = read_sql if read_sql is not None else self._sql
        self._key = key
        self.timeout_s = timeout_s
        self._cache: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def _remember(self, sess: Session) -> None:
        with self._lock:
            self._cache[sess.id] = sess
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)

    def _nonce(self, raw_id: bytes) -> str:
        return base64.b64encode(hmac.digest(self._key, _NONCE_DOMAIN + raw_id, "sha256")).decode("ascii")

    def create(self, tee: str) -> Session:
        """A fresh challenge for ``tee``: nothing is stored."""
        code = TEE_CODES.get(tee)
        if code is None:
            raise SessionInvalid(f"TEE {tee[:32]!r} cannot hold an RCAR session on this KBS.")
        expires_ms = int((time.time() + self.timeout_s) * 1000)
        raw = secrets.token_bytes(9) + expires_ms.to_bytes(6, "big") + bytes([code])
        return Session(raw.hex(), tee, self._nonce(raw), HASH_ALG, "authed", None, expires_ms / 1000)

    def challenge(self, session_id: str | None) -> Session:
        """The live challenge a session id names (checked against nothing stored: see module doc).

        An id this process already saw attested comes back attested. ``SessionInvalid`` if the id
        is malformed or expired.
        """
        if not session_id or not _ID.fullmatch(session_id):
            raise SessionInvalid("no valid session cookie; start with POST /kbs/v0/auth.")
        with self._lock:
            known = self._cache.get(session_id)
        if known is not None:
            return known
        raw = bytes.fromhex(session_id)
        tee = _TEE_OF.get(raw[15])
        expires_at = int.from_bytes(raw[9:15], "big") / 1000
        if tee is None or expires_at <= time.time():
            raise SessionInvalid("session is unknown or expired; start again with POST /kbs/v0/auth.")
        return Session(session_id, tee, self._nonce(raw), HASH_ALG, "authed", None, expires_at)

    def get(self, session_id: str | None) -> Session:
        """The live *attested* session with this id; ``SessionInvalid`` if there is none."""
        if not session_id or not _ID.fullmatch(session_id):
            raise SessionInvalid("no valid session cookie; start with POST /kbs/v0/auth.")
        with self._lock:
            sess = self._cache.get(session_id)
        if sess is None:
            row = self._read.one(_SELECT, (session_id,))
            if row is None:
                raise SessionInvalid("session is unknown or not attested; attest first.")
            sess = Session(*row)
        if sess.expires_at <= time.time():
            raise SessionInvalid("session is unknown or expired; start again with POST /kbs/v0/auth.")
        return sess

    def close(self) -> None:
        self._sql.close()
        if self._read is not self._sql:
            self._read.close()

    def mark_attested(self, session: Session, nonce: str, token: str) -> Session:
        """Consume the nonce: succeeds once per session, for the session's own nonce only."""
        if not hmac.compare_digest(nonce.encode(), session.nonce.encode()) or session.expires_at <= time.time():
            raise NonceInvalid("the challenge nonce is not this session's or has expired; start again with /auth.")
        params = (session.id, session.tee, session.nonce, session.hash_alg, token, session.expires_at)
        if self._sql.write(_INSERT_ATTESTED, params) != 1:
            raise NonceInvalid("the challenge nonce was already used; start again with /auth.")
        attested = Session(
            session.id, session.tee, session.nonce, session.hash_alg, "attested", token, session.expires_at
        )
        self._remember(attested)
        return attested
