"""OpenPGP verification of simple-signing signatures with the ``gpg`` binary in a throwaway keyring.

Each call builds a private GNUPGHOME holding only the policy's trusted keys, so nothing from the
host's keyrings can make a signature pass. Status lines (``--status-fd``) decide, never exit codes
alone: exactly one ``VALIDSIG`` whose primary-key fingerprint is in the trusted set is required.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import PolicyInvalid, SignatureInvalid, UntrustedKey

GPG = os.environ.get("ENCLAVEFLOW_GPG", "gpg")
MAX_SIGNATURE_BYTES = 4 * 1024 * 1024
TIMEOUT_S = 30.0


@dataclass(frozen=True)
class GpgVerified:
    payload: bytes
    fingerprint: str  # primary key fingerprint that made the signature


def _gpg(home: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    cmd = [
        GPG,
        "--homedir",
        str(home),
        "--batch",
        "--no-tty",
        "--no-autostart",
        "--no-permission-warning",
        *args,
    ]
    try:
        return subprocess.run(cmd, input=stdin, capture_output=True, timeout=TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise PolicyInvalid("the gpg program is not installed; signedBy policies need it") from None


def _import_keyrings(home: Path, keyrings: list[bytes]) -> set[str]:
    for i, blob in enumerate(keyrings):
        keyfile = home / f"trusted-{i}"
        keyfile.write_bytes(blob)
        _gpg(home, "--import", str(keyfile))
    listing = _gpg(home, "--with-colons", "--fingerprint", "--list-keys").stdout.decode("utf-8", "replace")
    fingerprints: set[str] = set()
    current = ""
    for line in listing.splitlines():
        fields = line.split(":")
        if fields[0] in ("pub", "sub"):
            current = fields[0]
        elif fields[0] == "fpr" and current == "pub":
            fingerprints.add(fields[9].upper())
    if not fingerprints:
        raise PolicyInvalid("the signedBy keyring holds no usable OpenPGP public key")
    return fingerprints


def verify_gpg(signature: bytes, keyrings: list[bytes]) -> GpgVerified:
    """Verify an inline-signed OpenPGP message against ``keyrings``; returns payload and fingerprint.

    UntrustedKey: signed by a key not in the keyrings (or expired/revoked). SignatureInvalid: bad
    signature, not a signature, or several signatures.
    """
    if len(signature) > MAX_SIGNATURE_BYTES:
        raise SignatureInvalid("a signature file is larger than allowed")
    with tempfile.TemporaryDirectory(prefix="ef-gpg-") as tmp:
        home = Path(tmp)
        os.chmod(home, 0o700)
        trusted = _import_keyrings(home, keyrings)
        sig_path, out_path = home / "signature", home / "payload"
        sig_path.write_bytes(signature)
        proc = _gpg(
            home,
            "--status-fd",
            "1",
            "--trust-model",
            "always",
            "--output",
            str(out_path),
            "--decrypt",
            str(sig_path),
        )
        status = [
            line.split()[1:]
            for line in proc.stdout.decode("utf-8", "replace").splitlines()
            if line.startswith("[GNUPG:] ")
        ]
        kinds = [s[0] for s in status if s]
        if any(k in ("EXPKEYSIG", "REVKEYSIG", "KEYEXPIRED", "KEYREVOKED") for k in kinds):
            raise UntrustedKey("the image was signed with an expired or revoked key")
        if "ERRSIG" in kinds and "NO_PUBKEY" in kinds:
            raise UntrustedKey("the image is signed by a key the policy does not trust")
        valid = [s for s in status if s and s[0] == "VALIDSIG"]
        if "BADSIG" in kinds or len(valid) != 1 or proc.returncode != 0:
            raise SignatureInvalid("the GPG signature does not verify or is not a single inline signature")
        primary = valid[0][-1].upper()
        if primary not in trusted:
            raise UntrustedKey("the image is signed by a key the policy does not trust")
        if not out_path.is_file() or out_path.stat().st_size > MAX_SIGNATURE_BYTES:
            raise SignatureInvalid("the GPG signature carries no usable payload")
        return GpgVerified(payload=out_path.read_bytes(), fingerprint=primary)
