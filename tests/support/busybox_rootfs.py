"""A plain busybox rootfs directory (no image, no registry) for runtime tests.

``/bin/busybox`` from busybox-static with a symlink per applet, and an /etc/passwd and /etc/group
that give the tests named users and groups to resolve.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
GROUP = "root:x:0:\napp:x:1000:\nstaff:x:50:app\naudio:x:63:other,app\nnogroup:x:65534:\n"


def build_busybox_rootfs(dest: Path) -> Path:
    """Create ``dest`` as a busybox rootfs and return it."""
    (dest / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, dest / "bin" / "busybox")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (dest / "bin" / applet).symlink_to("busybox")
    for d in ("etc", "tmp", "proc", "sys", "dev", "home/app", "data", "root"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    (dest / "tmp").chmod(0o1777)
    (dest / "etc" / "passwd").write_text(PASSWD)
    (dest / "etc" / "group").write_text(GROUP)
    return dest


IMAGE_CONFIG = {
    "os": "linux",
    "architecture": "amd64",
    "config": {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo image-default"], "Env": ["PATH=/bin", "FROM_IMAGE=1"]},
}
"""An image config to go with the rootfs (what image.mount's image would say)."""
