"""Every rule of oci_config.build_config, one test (or table) per rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters.runtime.errors import InvalidContainerSpec
from adapters.runtime.models import ContainerSpec, KeyValue, Mount, Resources
from adapters.runtime.oci_config import DEFAULT_CAPS, DEFAULT_PATH, build_config


def image(**config: Any) -> dict[str, Any]:
    return {"os": "linux", "architecture": "amd64", "config": config}


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n")
    (tmp_path / "etc/group").write_text("root:x:0:\napp:x:1001:\nstaff:x:50:app,bob\nwheel:x:10:bob\n")
    return tmp_path


def build(rootfs: Path, img: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return build_config(img or image(Cmd=["sh"]), ContainerSpec(**spec), rootfs)


# -- command and args ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entrypoint", "cmd", "command", "args", "argv"),
    [
        (["/ep"], ["c1"], [], [], ["/ep", "c1"]),  # image only: Entrypoint + Cmd
        (["/ep"], ["c1"], [], ["a1"], ["/ep", "a1"]),  # args replace Cmd, Entrypoint kept
        (["/ep"], ["c1"], ["/cmd"], [], ["/cmd"]),  # command alone: Entrypoint and Cmd both ignored
        (["/ep"], ["c1"], ["/cmd"], ["a1", "a2"], ["/cmd", "a1", "a2"]),  # command + args
        (None, ["sh", "-c", "x"], [], [], ["sh", "-c", "x"]),  # Cmd only
        ([""], ["c1"], [], [], ["c1"]),  # Entrypoint [""] counts as none
        (None, None, [], ["a1"], ["a1"]),  # args alone become the process
    ],
)
def test_command_and_args_follow_the_cri_rules(
    rootfs: Path, entrypoint: Any, cmd: Any, command: list[str], args: list[str], argv: list[str]
) -> None:
    cfg = build(rootfs, image(Entrypoint=entrypoint, Cmd=cmd), command=command, args=args)
    assert cfg["process"]["args"] == argv


def test_nothing_to_run_is_refused(rootfs: Path) -> None:
    with pytest.raises(InvalidContainerSpec, match="what to run"):
        build(rootfs, image())


def test_a_malformed_image_cmd_is_refused(rootfs: Path) -> None:
    with pytest.raises(InvalidContainerSpec, match="Cmd is not a list"):
        build(rootfs, image(Cmd="sh -c x"))


# -- env -------------------------------------------------------------------------------------------


def test_env_is_merged_request_over_image_in_place(rootfs: Path) -> None:
    img = image(Cmd=["sh"], Env=["PATH=/img/bin", "A=image", "B=image", "bogus"])
    cfg = build(rootfs, img, env=[KeyValue(key="B", value="req"), KeyValue(key="C", value="x=y")], hostname="web-1")
    assert cfg["process"]["env"] == ["PATH=/img/bin", "HOSTNAME=web-1", "A=image", "B=req", "C=x=y"]


def test_path_has_a_default_and_hostname_env_needs_a_hostname(rootfs: Path) -> None:
    assert build(rootfs)["process"]["env"] == [f"PATH={DEFAULT_PATH}"]


def test_request_may_override_path_and_hostname(rootfs: Path) -> None:
    env = [KeyValue(key="PATH", value="/mine"), KeyValue(key="HOSTNAME", value="other")]
    assert build(rootfs, hostname="h", env=env)["process"]["env"] == ["PATH=/mine", "HOSTNAME=other"]


# -- working dir -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image_wd", "request_wd", "cwd"),
    [(None, "", "/"), ("/srv", "", "/srv"), ("/srv", "/work/", "/work"), (None, "/a//b", "/a/b")],
)
def test_working_dir_request_over_image_default_root(
    rootfs: Path, image_wd: str | None, request_wd: str, cwd: str
) -> None:
    assert build(rootfs, image(Cmd=["sh"], WorkingDir=image_wd), working_dir=request_wd)["process"]["cwd"] == cwd


def test_relative_working_dir_is_refused(rootfs: Path) -> None:
    with pytest.raises(InvalidContainerSpec, match="not absolute"):
        build(rootfs, working_dir="srv")


# -- user ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image_user", "spec", "user"),
    [
        ("", {}, {"uid": 0, "gid": 0}),
        ("app", {}, {"uid": 1000, "gid": 1001, "additionalGids": [50]}),
        ("1000", {}, {"uid": 1000, "gid": 1001, "additionalGids": [50]}),  # uid: gid from passwd
        ("4242", {}, {"uid": 4242, "gid": 0}),  # a uid not in passwd: gid 0
        ("app:staff", {}, {"uid": 1000, "gid": 50}),  # user:group by names
        ("1000:7", {}, {"uid": 1000, "gid": 7, "additionalGids": [50]}),
        ("app", {"run_as_user": 0}, {"uid": 0, "gid": 0}),  # the request replaces the image's User
        ("", {"run_as_username": "app"}, {"uid": 1000, "gid": 1001, "additionalGids": [50]}),
        ("", {"run_as_user": 1000, "run_as_username": "root"}, {"uid": 1000, "gid": 1001, "additionalGids": [50]}),
        ("", {"run_as_user": 1000, "run_as_group": 9}, {"uid": 1000, "gid": 9, "additionalGids": [50]}),
        ("", {"run_as_username": "app", "run_as_group": 50}, {"uid": 1000, "gid": 50}),
    ],
)
def test_user_rules(rootfs: Path, image_user: str, spec: dict[str, Any], user: dict[str, Any]) -> None:
    assert build(rootfs, image(Cmd=["sh"], User=image_user), **spec)["process"]["user"] == user


@pytest.mark.parametrize(
    ("image_user", "spec", "match"),
    [
        ("ghost", {}, "not in the image's /etc/passwd"),
        ("", {"run_as_username": "ghost"}, "not in the image's /etc/passwd"),
        ("app:ghosts", {}, "not in the image's /etc/group"),
        ("", {"run_as_group": 5}, "without run_as_user"),
        (":staff", {}, "no user part"),
        ("app:", {}, "empty group part"),
    ],
)
def test_bad_users_are_refused(rootfs: Path, image_user: str, spec: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidContainerSpec, match=match):
        build(rootfs, image(Cmd=["sh"], User=image_user), **spec)


def test_user_names_are_not_read_through_a_symlinked_etc(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("evil:x:0:0::/:/bin/sh\n")
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / "etc").symlink_to(outside)
    with pytest.raises(InvalidContainerSpec, match="not in the image's /etc/passwd"):
        build(rootfs, image(Cmd=["sh"], User="evil"))


def test_a_symlinked_passwd_file_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "real").write_text("evil:x:0:0::/:/bin/sh\n")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").symlink_to(tmp_path / "real")
    with pytest.raises(InvalidContainerSpec, match="not in the image's /etc/passwd"):
        build(tmp_path, image(Cmd=["sh"], User="evil"))


# -- hostname, namespaces, security defaults -------------------------------------------------------


def test_hostname_and_namespaces(rootfs: Path) -> None:
    cfg = build(rootfs, hostname="pod-a")
    assert cfg["hostname"] == "pod-a"
    kinds = [n["type"] for n in cfg["linux"]["namespaces"]]
    assert sorted(kinds) == ["ipc", "mount", "pid", "uts"]  # no network: the enclave's own
    assert "hostname" not in build(rootfs)


def test_security_defaults(rootfs: Path) -> None:
    cfg = build(rootfs)
    process = cfg["process"]
    assert process["noNewPrivileges"] is True and process["terminal"] is False
    assert process["capabilities"]["bounding"] == DEFAULT_CAPS
    assert process["capabilities"]["effective"] == DEFAULT_CAPS == process["capabilities"]["permitted"]
    assert "CAP_SYS_ADMIN" not in DEFAULT_CAPS
    assert {"/proc/kcore", "/proc/keys", "/sys/firmware"} <= set(cfg["linux"]["maskedPaths"])
    assert {"/proc/sys", "/proc/sysrq-trigger"} <= set(cfg["linux"]["readonlyPaths"])
    assert cfg["linux"]["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
    assert cfg["root"] == {"path": "rootfs", "readonly": False}


def test_root_and_cgroup_options(rootfs: Path) -> None:
    cfg = build_config(
        image(Cmd=["sh"]), ContainerSpec(), rootfs, root_path="/img/rootfs", root_readonly=True, cgroups_path="/x/c"
    )
    assert cfg["root"] == {"path": "/img/rootfs", "readonly": True}
    assert cfg["linux"]["cgroupsPath"] == "/x/c"


def test_annotations_are_copied(rootfs: Path) -> None:
    assert build(rootfs, annotations={"a.b/c": "d"})["annotations"] == {"a.b/c": "d"}


def test_non_linux_images_are_refused(rootfs: Path) -> None:
    with pytest.raises(InvalidContainerSpec, match="only linux"):
        build_config({"os": "windows", "config": {"Cmd": ["x"]}}, ContainerSpec(), rootfs)


# -- mounts ----------------------------------------------------------------------------------------


def test_default_mounts(rootfs: Path) -> None:
    mounts = {m["destination"]: m for m in build(rootfs)["mounts"]}
    assert list(mounts) == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"]
    assert "ro" in mounts["/sys"]["options"] and mounts["/proc"]["type"] == "proc"


def test_request_mounts_are_binds_with_readonly_honoured_parents_first(rootfs: Path) -> None:
    spec_mounts = [
        Mount(container_path="/data/sub/", host_path="/h/sub", readonly=True),
        Mount(container_path="/data", host_path="/h/data"),
        Mount(container_path="/dev/shm", host_path="/h/shm"),
    ]
    mounts = build(rootfs, mounts=spec_mounts)["mounts"]
    dests = [m["destination"] for m in mounts]
    assert dests == ["/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys", "/data", "/data/sub", "/dev/shm"]
    by = {m["destination"]: m for m in mounts}
    assert by["/data/sub"] == {
        "destination": "/data/sub",
        "type": "bind",
        "source": "/h/sub",
        "options": ["rbind", "rprivate", "ro"],
    }
    assert by["/data"]["options"][-1] == "rw" and by["/dev/shm"]["type"] == "bind"  # replaced the default


@pytest.mark.parametrize(
    ("container_path", "host_path", "match"),
    [
        ("data", "/h", "not absolute"),
        ("/data/../etc", "/h", "contains '..'"),
        ("/", "/h", "root '/'"),
        ("/proc/sys", "/h", "below /proc"),
        ("/sys", "/h", "below /sys"),
        ("/data", "h", "absolute path without '..'"),
        ("/data", "/h/../etc", "absolute path without '..'"),
    ],
)
def test_bad_mounts_are_refused(rootfs: Path, container_path: str, host_path: str, match: str) -> None:
    with pytest.raises(InvalidContainerSpec, match=match):
        build(rootfs, mounts=[Mount(container_path=container_path, host_path=host_path)])


def test_two_mounts_on_one_path_are_refused(rootfs: Path) -> None:
    mounts = [Mount(container_path="/d", host_path="/a"), Mount(container_path="/d/", host_path="/b")]
    with pytest.raises(InvalidContainerSpec, match="Two mounts"):
        build(rootfs, mounts=mounts)


# -- resources -------------------------------------------------------------------------------------


def test_resources_only_what_is_set(rootfs: Path) -> None:
    res = build(rootfs)["linux"]["resources"]
    assert "cpu" not in res and "memory" not in res
    res = build(rootfs, resources=Resources(cpu_period=100000, cpu_quota=50000, cpu_shares=512))["linux"]["resources"]
    assert res["cpu"] == {"period": 100000, "quota": 50000, "shares": 512} and "memory" not in res


def test_memory_limit_caps_swap_when_the_controller_exists(rootfs: Path) -> None:
    spec = ContainerSpec(resources=Resources(memory_limit_in_bytes=1 << 26))
    with_swap = build_config(image(Cmd=["sh"]), spec, rootfs, swap_controller=True)["linux"]["resources"]
    assert with_swap["memory"] == {"limit": 1 << 26, "swap": 1 << 26}
    without = build_config(image(Cmd=["sh"]), spec, rootfs, swap_controller=False)["linux"]["resources"]
    assert without["memory"] == {"limit": 1 << 26}
