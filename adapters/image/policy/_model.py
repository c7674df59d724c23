"""containers-policy.json as validated value objects (PROTOCOLS §4.1, §4.2).

Parsing is lenient on unknown fields like image-rs, but fails closed on anything that would weaken a
requirement if ignored: Fulcio/PKI/Rekor requirements are refused as unsupported rather than skipped.
Only the ``docker`` transport's scopes are consulted (image-rs); other transports are kept but unused.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from adapters.registry import jsonload as bounded_json

from ..errors import PolicyInvalid
from ._identity import SignedIdentity

MAX_POLICY_BYTES = 1 << 20


class _Req(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class InsecureAcceptAnything(_Req):
    type: Literal["insecureAcceptAnything"]


class Reject(_Req):
    type: Literal["reject"]


class SignedBy(_Req):
    """GPG simple signing: exactly one of keyPath / keyPaths / keyData (b64 of a keyring)."""

    type: Literal["signedBy"]
    keyType: Literal["GPGKeys"] = "GPGKeys"
    keyPath: str | None = None
    keyPaths: list[str] | None = None
    keyData: str | None = None
    signedIdentity: SignedIdentity | None = None

    @model_validator(mode="after")
    def _one_key_source(self) -> SignedBy:
        if sum(x is not None for x in (self.keyPath, self.keyPaths, self.keyData)) != 1:
            raise ValueError("signedBy needs exactly one of keyPath, keyPaths, keyData")
        return self

    def keyring_blobs(self) -> list[bytes]:
        """The trusted keyring(s) as bytes (binary or armored OpenPGP)."""
        if self.keyData is not None:
            return [_b64(self.keyData, "signedBy keyData")]
        return [_read_key_file(p) for p in ([self.keyPath] if self.keyPath else self.keyPaths or [])]


class SigstoreSigned(_Req):
    """Cosign signatures verified with PEM public keys (keyPath / keyPaths / keyData / keyDatas)."""

    type: Literal["sigstoreSigned"]
    keyPath: str | None = None
    keyPaths: list[str] | None = None
    keyData: str | None = None
    keyDatas: list[str] | None = None
    signedIdentity: SignedIdentity | None = None
    fulcio: Any = None
    pki: Any = None
    rekorPublicKeyPath: Any = None
    rekorPublicKeyPaths: Any = None
    rekorPublicKeyData: Any = None
    rekorPublicKeyDatas: Any = None

    @model_validator(mode="after")
    def _supported(self) -> SigstoreSigned:
        unsupported = [
            n
            for n in (
                "fulcio",
                "pki",
                "rekorPublicKeyPath",
                "rekorPublicKeyPaths",
                "rekorPublicKeyData",
                "rekorPublicKeyDatas",
            )
            if getattr(self, n) is not None
        ]
        if unsupported:
            raise ValueError(f"sigstoreSigned {', '.join(unsupported)} is not supported; use public keys")
        if sum(x is not None for x in (self.keyPath, self.keyPaths, self.keyData, self.keyDatas)) != 1:
            raise ValueError("sigstoreSigned needs exactly one of keyPath, keyPaths, keyData, keyDatas")
        if self.signedIdentity is not None and self.signedIdentity.type not in (
            "matchRepository",
            "exactRepository",
            "remapIdentity",
        ):
            raise ValueError(
                "cosign signatures carry only a repository: use matchRepository or exactRepository"
            )
        return self

    def public_key_pems(self) -> list[bytes]:
        if self.keyPath is not None:
            return [_read_key_file(self.keyPath)]
        if self.keyPaths is not None:
            return [_read_key_file(p) for p in self.keyPaths]
        datas = [self.keyData] if self.keyData is not None else self.keyDatas or []
        # Upstream: base64 of the PEM. image-rs takes the raw PEM string; accept both.
        return [
            d.encode() if d.lstrip().startswith("-----BEGIN") else _b64(d, "sigstoreSigned keyData")
            for d in datas
        ]


Requirement = Annotated[
    InsecureAcceptAnything | Reject | SignedBy | SigstoreSigned, Field(discriminator="type")
]


class Policy(BaseModel):
    """The whole document: ``default`` plus transport -> scope -> requirements."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    default: list[Requirement] = Field(min_length=1)
    transports: dict[str, dict[str, list[Requirement]]] = {}

    @model_validator(mode="after")
    def _no_empty_scope(self) -> Policy:
        """An empty requirement list would accept anything: refused, as containers/image and image-rs do."""
        for transport, scopes in self.transports.items():
            for scope, requirements in scopes.items():
                if not requirements:
                    raise ValueError(
                        f"the scope {scope[:200]!r} of transport {transport[:40]!r} has no requirements; "
                        "list at least one (e.g. reject or signedBy)"
                    )
        return self

    @classmethod
    def parse(cls, source: str | Path | dict[str, Any]) -> Policy:
        """From a dict, a JSON string or a file path; PolicyInvalid with the first problem otherwise."""
        origin = "the signature policy"
        if isinstance(source, dict):
            data = source
        else:
            text = str(source)
            if not text.lstrip().startswith("{"):
                path = Path(text)
                try:
                    is_file = path.is_file()
                except OSError:  # e.g. a name longer than PATH_MAX
                    is_file = False
                if not is_file:
                    raise PolicyInvalid(f"policy file {text[:200]} does not exist")
                if path.stat().st_size > MAX_POLICY_BYTES:
                    raise PolicyInvalid(f"policy file {path} is larger than {MAX_POLICY_BYTES} bytes")
                origin = f"the signature policy {path}"
                try:
                    text = path.read_bytes().decode("utf-8")
                except (OSError, UnicodeDecodeError):
                    raise PolicyInvalid(f"{origin} cannot be read as UTF-8 text") from None
            try:
                data = bounded_json.loads(text)
            except ValueError:
                raise PolicyInvalid(f"{origin} is not valid JSON (or nests too deeply)") from None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err.get("loc", ()))
            raise PolicyInvalid(f"{origin} is invalid at {loc or 'top level'}: {err['msg']}") from None


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise PolicyInvalid(f"{what} is not valid base64") from None


def _read_key_file(path: str) -> bytes:
    p = Path(path.removeprefix("file://"))
    if not p.is_file():
        raise PolicyInvalid(f"the policy's key file {p} does not exist")
    if p.stat().st_size > MAX_POLICY_BYTES:
        raise PolicyInvalid(f"the policy's key file {p} is too large")
    return p.read_bytes()
