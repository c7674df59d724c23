"""Client options and the retry policy, as small validated value objects."""

from __future__ import annotations

import dataclasses
import ipaddress
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from .auth import Credentials


@dataclass(frozen=True)
class RetryPolicy:
    """How to retry connection errors, timeouts, 429 and 5xx answers."""

    attempts: int = 4
    """Total tries per request, the first included."""
    initial: float = 0.2
    """Delay before the second try, in seconds."""
    multiplier: float = 2.0
    """Each further delay is the previous one times this."""
    maximum: float = 5.0
    """Upper bound of one computed delay."""
    max_retry_after: float = 30.0
    """Upper bound honoured for a registry's ``Retry-After``; longer asks fail instead of hanging."""

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be >= 1")
        if self.initial < 0 or self.maximum < self.initial:
            raise ValueError("need 0 <= initial <= maximum")
        if self.multiplier < 1:
            raise ValueError("multiplier must be >= 1")

    def delay(self, attempt: int) -> float:
        """Delay after failed try number ``attempt`` (1-based), with +-20 % jitter."""
        base = min(self.initial * self.multiplier ** (attempt - 1), self.maximum)
        return base * (0.8 + 0.4 * random.random())  # noqa: S311 - jitter, not crypto

    def wait_after(self, attempt: int, exc: Exception, host: str) -> float:
        """How long to wait after failed try ``attempt``: the backoff delay, or the registry's
        ``Retry-After`` when longer; a ``Retry-After`` beyond ``max_retry_after`` fails at once."""
        wait = self.delay(attempt)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is None:
            return wait
        if retry_after > self.max_retry_after:
            from .errors import RegistryUnavailable

            raise RegistryUnavailable(
                f"{host} asked to retry after {retry_after:.0f}s, longer than allowed; try later."
            ) from exc
        return float(max(wait, retry_after))


@dataclass(frozen=True)
class ClientOptions:
    """Everything that configures a registry client; defaults suit a pull inside the enclave."""

    timeout: float = 30.0
    """Seconds to wait for connect / each read / each write."""
    pull_timeout: float = 600.0
    """Seconds a whole pull may take, retries included (the per-read ``timeout`` alone lets a
    registry that trickles a byte every few seconds hold a pull forever)."""
    min_transfer_rate: int = 4096
    """Bytes/s a blob download must average over each ``rate_window``; slower restarts it (0: off)."""
    rate_window: float = 30.0
    deadline: float | None = None
    """``time.monotonic()`` by which the current pull must end; set by ``with_deadline()``."""
    ca_bundle: Path | None = None
    """Extra PEM CA bundle trusted for TLS, in addition to the system's CAs (as containers' certs.d:
    a registry with a private CA can still redirect blob downloads to a public CDN)."""
    insecure_registries: tuple[str, ...] = ()
    """``host[:port]`` entries allowed over plain HTTP (loopback hosts always are)."""
    auth_file: Path | None = None
    """Docker-style auth.json to take credentials from."""
    credentials: Credentials | None = None
    """Explicit credentials; win over ``auth_file``."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_manifest_bytes: int = 4 << 20
    """Manifests and indexes above this are refused (the distribution spec suggests 4 MiB)."""
    max_config_bytes: int = 8 << 20
    max_image_bytes: int = 16 << 30
    """Sum of config and layer sizes above this is refused before anything is downloaded."""
    chunk_size: int = 1 << 20
    """Read/upload chunk size."""
    platform: str = "linux/amd64"

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.max_manifest_bytes <= 0 or self.max_image_bytes <= 0:
            raise ValueError("timeouts and limits must be positive")
        if self.pull_timeout <= 0 or self.min_transfer_rate < 0 or self.rate_window <= 0:
            raise ValueError("the pull timeout and rate window must be positive, the minimum rate >= 0")

    def with_deadline(self) -> ClientOptions:
        """These options with the pull's deadline fixed from now (an existing deadline is kept)."""
        if self.deadline is not None:
            return self
        return dataclasses.replace(self, deadline=time.monotonic() + self.pull_timeout)

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline set)."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def io_timeout(self) -> float:
        """The per-operation timeout, shortened so no single wait outlasts the deadline."""
        left = self.remaining()
        return self.timeout if left is None else max(0.05, min(self.timeout, left))

    def check_deadline(self) -> None:
        """Raise ``PullDeadlineExceeded`` once the deadline has passed."""
        left = self.remaining()
        if left is not None and left <= 0:
            from .errors import PullDeadlineExceeded

            raise PullDeadlineExceeded.after(self.pull_timeout)

    def plain_http_allowed(self, host: str) -> bool:
        """Docker's convention: loopback registries and listed insecure registries may use HTTP."""
        if host in self.insecure_registries:
            return True
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        name = name.strip("[]")
        if name == "localhost":
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False
