"""A throwaway SoftHSM2 token for tests: own SOFTHSM2_CONF and token dir under a tmp path.

``start_softhsm(tmp)`` initialises one token and sets ``SOFTHSM2_CONF`` for this process (and any
child it starts); the returned ``SoftHsm`` says the module, label and PINs.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

MODULE = "/usr/lib/softhsm/libsofthsm2.so"


@dataclass(frozen=True)
class SoftHsm:
    conf: Path
    label: str
    pin: str
    so_pin: str
    module: str = MODULE


def start_softhsm(tmp: Path, label: str = "kbs-test", pin: str = "4321", so_pin: str = "8765") -> SoftHsm:
    tokens = tmp / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = tmp / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", so_pin, "--pin", pin],
        check=True,
        capture_output=True,
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
    )
    return SoftHsm(conf, label, pin, so_pin)
