"""The KBS itself, free of HTTP: RCAR auth/attest, resource release and admin operations.

HTTP handlers (``api.py``) only parse, call one method here and shape the answer. Everything a
replica must share lives in the database (sessions, resources, reference values, policies, token
key); what lives only in memory here is caches.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from adapters.kms import Kms, open_kms
from adapters.tee.sim_evidence import platform_id_of
from engine.errors import UsageError

from ..errors import ProtocolError
from ..jwe import seal
from ..protocol import Attestation, Request, ResourcePath, check_protocol_version
from .admin import AdminAuth, load_public_key
from .attestation.rvps import Rvps
from .attestation.service import AttestationService, status_of_claims, tee_of_claims, tee_pubkey_of_claims
from .attestation.verifiers import SampleVerifier, SimVerifier, Verifier
from .config import KbsConfig
from .db import open_engine
from .errors import AttestationFailed, NonceInvalid, TokenInvalid, TokenNotFound
from .hotsql import HotSql
from .housekeeping import Housekeeper
from .policies import PolicyStore
from .policy import check_access
from .resource import ResourceStore
from .sessions import Session, SessionStore, nonce_key
from .token import TokenBroker, load_or_create_key

log = logging.getLogger("enclaveflow.kbs")


def load_platform_keys(paths: tuple[Path, ...]) -> dict[str, Ed25519PublicKey]:
    """Trusted sim platform keys (PEM public keys), by platform id."""
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise UsageError(
                f"cannot read trusted platform key {path}",
                hint="pass the PEM printed by 'enclaveflow tee platform-key show'",
            ) from exc
        if not isinstance(key, Ed25519PublicKey):
            raise UsageError(
                f"trusted platform key {path} is not Ed25519",
                hint="pass the PEM printed by 'enclaveflow tee platform-key show'",
            )
        keys[platform_id_of(key)] = key
    return keys


class Kbs:
    """One KBS process: shared state in the database, caches in memory."""

    def __init__(self, config: KbsConfig, kms: Kms | None = None) -> None:
        self.config = config
        self.admin = AdminAuth([load_public_key(p) for p in config.admin_public_keys], config.insecure_admin)
        self.platform_keys = load_platform_keys(config.trusted_platform_keys)
        self.kms = kms if kms is not None else open_kms(config.kms)
        self.engine = open_engine(config.db_url, background_checkpoints=True)
        self.housekeeper = Housekeeper(self.engine)  # WAL checkpoints, purge of expired sessions
        self.housekeeper.start()
        # Hot-path connections: one writes (the attested session at /attest), one reads (resource
        # blobs, sessions). The reads never queue behind a write that waits out a TRUNCATE checkpoint
        # (see ``fastpath``: during one, /attest runs in a worker thread, the event loop stays free).
        self.hot_sql = HotSql(self.engine)
        self.hot_read = HotSql(self.engine)
        token_key = load_or_create_key(self.engine, self.kms)
        self.broker = TokenBroker(token_key, config.token_lifetime_s)
        der = token_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self.sessions = SessionStore(
            self.engine, nonce_key(der), config.session_timeout_s, self.hot_sql, read_sql=self.hot_read
        )
        self.rvps = Rvps(self.engine)
        self.policies = PolicyStore(self.engine)
        self.resources = ResourceStore(self.engine, self.kms, self.hot_read)
        # ``sample`` has no root of trust: its verifier (and its init-data parsing) is reachable
        # only when tokens of sample TEEs may read resources (--allow-tee sample).
        verifiers: dict[str, Verifier] = {"sim": SimVerifier(self.platform_keys)}
        if "sample" in config.allow_tees:
            verifiers["sample"] = SampleVerifier()
        self.service = AttestationService(
            verifiers,
            self.policies.attestation.get,
            self.rvps.query,
            config.token_lifetime_s,
        )

    def close(self) -> None:
        self.housekeeper.stop()
        self.hot_sql.close()
        self.hot_read.close()
        self.engine.dispose()
        self.kms.close()

    # -- RCAR --------------------------------------------------------------------------------

    def auth(self, req: Request) -> Session:
        try:
            check_protocol_version(req.version)
        except ProtocolError as exc:
            raise AttestationFailed(f"RCAR handshake Auth failed: {exc.message}") from exc
        if not self.service.supports(req.tee):
            raise AttestationFailed(
                f"RCAR handshake Auth failed: TEE {req.tee[:32]!r} is not supported here."
            )
        return self.sessions.create(req.tee)

    def challenge(self, session: Session) -> dict[str, Any]:
        """The /auth answer (PROTOCOLS §1.4) as its wire dict (same as ``Challenge(...).wire()``)."""
        return {"nonce": session.nonce, "extra-params": ""}

    def attest(self, session_id: str | None, att: Attestation) -> Session:
        """Verify, appraise, sign; returns the now attested session (its ``token`` is the EAR)."""
        session = self.sessions.challenge(session_id)
        if session.attested:
            raise NonceInvalid("this session already attested; its nonce is good for one attestation only.")
        if not hmac.compare_digest(att.runtime_data.nonce.encode(), session.nonce.encode()):
            raise NonceInvalid(
                "runtime-data nonce is not this session's challenge; use the nonce from /auth."
            )
        claims = self.service.evaluate(session.tee, session.nonce, session.hash_alg, att)
        token = self.broker.sign(claims)
        attested = self.sessions.mark_attested(session, att.runtime_data.nonce, token)
        # DEBUG, not INFO: this is the per-release hot path (refusals are logged by the app at INFO).
        log.debug("attestation tee=%s status=%s", session.tee, status_of_claims(claims))
        return attested

    # -- resources ---------------------------------------------------------------------------

    def token_for(self, session_id: str | None, bearer: str | None) -> str:
        """The session's token if the cookie names an attested session, else the bearer token."""
        if session_id:
            try:
                session = self.sessions.get(session_id)
                if session.attested and session.token:
                    return session.token
            except AttestationFailed:
                pass  # fall through to the bearer token, as trustee does
        if bearer:
            return bearer
        raise TokenNotFound("no attestation token: attest first or send 'Authorization: Bearer <token>'.")

    def release(self, path: ResourcePath, token: str) -> dict[str, str]:
        """The resource sealed to the token's TEE key, if the policy allows."""
        claims = self.broker.verify(token)
        check_access(self.policies.resource.get(), claims, path, self.config.allow_tees)
        pubkey = tee_pubkey_of_claims(claims)
        if not isinstance(pubkey, dict):
            raise TokenInvalid("attestation token carries no TEE public key; attest again.")
        jwe = seal(self.resources.get(path), pubkey)
        log.debug("released %s to tee=%s", path, tee_of_claims(claims))
        return jwe

    # -- admin -------------------------------------------------------------------------------

    def put_resource(self, path: ResourcePath, value: bytes) -> dict[str, Any]:
        info = self.resources.put(path, value)
        log.info("resource set %s (%d bytes, kms=%s key=%s)", path, len(value), info["kms"], info["key_id"])
        return info

    def delete_resource(self, path: ResourcePath) -> None:
        self.resources.delete(path)
        log.info("resource deleted %s", path)
