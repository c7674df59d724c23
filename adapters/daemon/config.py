"""The daemon's configuration: one YAML file, environment overrides, then command-line flags.

Precedence (lowest first): built-in defaults, the file (``--config``), ``ENCLAVEFLOW_DAEMON_<KEY>``
environment variables, flags. Every problem is reported as ``FILE: key: what is wrong`` so an operator
can fix it without reading a traceback.

The ``enclave`` part of the config is what each pod's enclave is launched with and MEASURED with: the
KBS URL and CA, the image policy, registry settings, ``require_attestation``. Changing any of it
changes every new enclave's launch digest, which the KBS must then be told (``enclaveflow tee measure``).
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.errors import UsageError

MAX_CONFIG_BYTES = 1024 * 1024
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]i?B?)?\s*$", re.I)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(value: str | int) -> int:
    """``64MiB``, ``1G``, ``1048576`` -> bytes (binary units)."""
    if isinstance(value, int):
        return value
    m = _SIZE.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a size; write e.g. 512MiB or 2GiB")
    unit = (m.group(2) or "")[:1].lower()
    return int(m.group(1)) * _UNITS[unit]


class DaemonConfig(BaseSettings):
    """Everything ``enclaveflow daemon`` needs; each field documents its flag and default."""

    model_config = SettingsConfigDict(env_prefix="ENCLAVEFLOW_DAEMON_", extra="forbid")

    cri_socket: Path = Field(Path("/run/enclaveflow/cri.sock"), description="CRI v1 unix socket (--cri-socket)")
    run_dir: Path = Field(Path("/run/enclaveflow"), description="pods' sockets and enclave records (--run-dir)")
    db: str | None = Field(None, description="engine database URL or SQLite path (--db; default ENCLAVEFLOW_DB)")
    listen_admin: str = Field("127.0.0.1:8790", description="admin HTTP API, loopback only (--listen-admin)")
    policy: Path | None = Field(None, description="containers-policy.json for every pod (--policy)")
    kbs_url: str | None = Field(None, description="the KBS pods attest to (--kbs-url)")
    kbs_ca: Path | None = Field(None, description="CA bundle (PEM) for an https KBS")
    require_attestation: bool = Field(False, description="attest every pod, even for unencrypted images")
    insecure_registries: list[str] = Field(default_factory=list, description="registries reached over plain HTTP")
    platform_key: Path | None = Field(None, description="sim platform key (default: the tee state dir)")
    enclave_storage: str = Field("1GiB", description="each enclave's private tmpfs size")
    concurrency: int = Field(64, ge=1, le=10000, description="runs driven at once")
    lease_ttl: float = Field(30.0, ge=3.0, le=3600.0, description="run lease in seconds")
    drain_seconds: float = Field(20.0, ge=0.0, le=3600.0, description="how long SIGTERM waits for in-flight steps")
    cri: bool = Field(True, description="serve the CRI socket (off: engine and enclaves only)")
    node_name: str = Field(default_factory=lambda: socket.gethostname()[:64], min_length=1, max_length=64,
                           description="this node's name: its pods' runs are driven only by its daemon")

    @field_validator("kbs_url")
    @classmethod
    def _kbs_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("must be http(s)://HOST[:PORT]")
        return v.rstrip("/") if v else v

    @field_validator("listen_admin")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, _, port = v.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:8790")
        return v

    @field_validator("enclave_storage")
    @classmethod
    def _storage(cls, v: str) -> str:
        size = parse_size(v)
        if not 16 * 1024**2 <= size <= 64 * 1024**3:
            raise ValueError("must be between 16MiB and 64GiB")
        return v

    def storage_bytes(self) -> int:
        return parse_size(self.enclave_storage)

    def admin_address(self) -> tuple[str, int]:
        host, _, port = self.listen_admin.rpartition(":")
        return host.strip("[]"), int(port)

    def enclave_config(self) -> dict[str, Any]:
        """The measured config every pod's enclave gets (see the module docstring)."""
        config: dict[str, Any] = {"tee": "sim", "require_attestation": self.require_attestation}
        if self.kbs_url:
            config["kbs_url"] = self.kbs_url
        if self.kbs_ca:
            config["kbs_ca"] = _read_text(self.kbs_ca, "kbs_ca")
        if self.policy:
            config["image_policy"] = _read_json(self.policy, "policy")
        if self.insecure_registries:
            config["registry"] = {"insecure_registries": list(self.insecure_registries)}
        return config


def load_config(path: Path | None, overrides: dict[str, Any]) -> DaemonConfig:
    """The config from ``path`` (YAML), the environment, then ``overrides`` (flags; None values ignored)."""
    source = str(path) if path else "config"
    data: dict[str, Any] = {}
    if path is not None:
        data = _read_yaml(path)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return DaemonConfig(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(x) for x in err.get("loc", ())) or "(top level)"
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = f"unknown key; known keys: {', '.join(sorted(DaemonConfig.model_fields))}"
        raise UsageError(f"{source}: {key}: {msg}") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the config file ({exc.strerror})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise UsageError(f"{path}: the config file is larger than 1 MiB")
    try:
        data = yaml.safe_load(raw) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise UsageError(f"{path}: {where}not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: the config must be a mapping of keys to values")
    return data


def _read_text(path: Path, key: str) -> str:
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"{key}: cannot read {path} ({exc.strerror})") from None
    if len(text) > MAX_CONFIG_BYTES:
        raise UsageError(f"{key}: {path} is larger than 1 MiB")
    return text


def _read_json(path: Path, key: str) -> Any:
    text = _read_text(path, key)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"{key}: {path} is not valid JSON ({exc})") from None


