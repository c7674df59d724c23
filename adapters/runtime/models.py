"""The container request and what the runtime reports back, as pydantic models.

``ContainerSpec`` mirrors the subset of the CRI v1 ``ContainerConfig`` this runtime honours, with the
same field names, so the CRI server can copy a request field by field. Every list, map and string is
bounded: a request is validated before anything is written, and an absurd one is refused up front.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_ARG = 64 * 1024
MAX_PATH = 4096
MAX_ID = 128

Arg = Annotated[str, StringConstraints(max_length=MAX_ARG)]
PathText = Annotated[str, StringConstraints(max_length=MAX_PATH)]
LabelKey = Annotated[str, StringConstraints(min_length=1, max_length=253)]
LabelValue = Annotated[str, StringConstraints(max_length=MAX_ARG)]
CONTAINER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
ContainerId = Annotated[str, StringConstraints(pattern=CONTAINER_ID_PATTERN)]
"""A container id is a file name (it names the bundle dir and the runc container)."""

ContainerState = Literal["CREATED", "RUNNING", "EXITED", "UNKNOWN"]
ExitReason = Literal["", "Completed", "Error", "OOMKilled"]


class KeyValue(BaseModel):
    """One environment variable (CRI ``KeyValue``)."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=1024, pattern=r"^[^=\x00]+$")
    value: str = Field(default="", max_length=MAX_ARG, pattern=r"^[^\x00]*$")


class Mount(BaseModel):
    """A bind mount of ``host_path`` (a path the agent sees) at ``container_path`` (CRI ``Mount``)."""

    model_config = ConfigDict(extra="forbid")

    container_path: PathText
    host_path: PathText
    readonly: bool = False


class Resources(BaseModel):
    """CRI ``LinuxContainerResources`` subset; 0 means "not set" as in CRI."""

    model_config = ConfigDict(extra="forbid")

    cpu_period: int = Field(default=0, ge=0, le=1_000_000)
    cpu_quota: int = Field(default=0, ge=-1, le=1 << 40)
    cpu_shares: int = Field(default=0, ge=0, le=262_144)
    memory_limit_in_bytes: int = Field(default=0, ge=0, le=1 << 50)


class ContainerSpec(BaseModel):
    """What to run: the CRI ``ContainerConfig`` fields this runtime honours (field names as in CRI)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="", max_length=253)
    command: list[Arg] = Field(default_factory=list, max_length=1024)
    args: list[Arg] = Field(default_factory=list, max_length=1024)
    env: list[KeyValue] = Field(default_factory=list, max_length=1024)
    working_dir: PathText = ""
    run_as_user: int | None = Field(default=None, ge=0, le=(1 << 32) - 2)
    run_as_group: int | None = Field(default=None, ge=0, le=(1 << 32) - 2)
    run_as_username: str | None = Field(default=None, min_length=1, max_length=256, pattern=r"^[^:\n\x00]+$")
    hostname: str = Field(default="", max_length=64, pattern=r"^[A-Za-z0-9.-]*$")
    mounts: list[Mount] = Field(default_factory=list, max_length=128)
    resources: Resources = Field(default_factory=Resources)
    log_path: PathText = ""
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=256)
    annotations: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=256)


class ContainerStatus(BaseModel):
    """A container's state as CRI reports it; times are Unix nanoseconds (0 = not yet)."""

    id: str
    state: ContainerState
    created_at: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: ExitReason = ""
    message: str = ""
    pid: int | None = None


class ContainerStats(BaseModel):
    """Usage as CRI ``ContainerStats`` wants it (working set = usage - inactive file cache)."""

    id: str
    timestamp: int
    cpu_usage_ns: int
    memory_usage_bytes: int
    memory_working_set_bytes: int


class ExecResult(BaseModel):
    """``exec_sync``'s outcome; output beyond the bound is dropped and flagged as truncated."""

    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
