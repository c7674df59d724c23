"""The real ``PodBackend``: CRI calls become ``pod-launch`` runs, run events and enclave agent calls.

How the calls map (docs/cri.md has the full table):

- RunPodSandbox -> one ``pod-launch`` run per (pod uid, attempt) (idempotency key), driven by this
  daemon's worker through ``requested -> enclave-init -> agent-ready -> sandbox-ready``; the call
  returns when the enclave is up (the sandbox is READY) or fails with the run's error.
- PullImage with a sandbox config, or CreateContainer for an image the pod does not hold yet ->
  the run's ``image`` event: ``pulling -> verifying -> attesting -> key-released -> decrypted ->
  mounted -> running``, all inside the pod's enclave. PullImage without a sandbox config only records
  the image's manifest digest and size on the host: nothing is decrypted outside an enclave.
- Create/Start/Stop/RemoveContainer, ExecSync, stats, logs -> calls to the pod's agent (runc inside
  the enclave), each recorded on the run as a ``container.*`` audit event.
- StopPodSandbox -> the run's ``stop`` event (containers stopped, enclave destroyed; a run still
  launching is cancelled instead); RemovePodSandbox -> its ``remove`` event.
One image per pod in this version: a second, different image in the same sandbox is refused with
FAILED_PRECONDITION (the run holds one ``pulling .. mounted`` pass).
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from engine.errors import ActionError, InvalidState
from engine.schema import attempts, runs

from .errors import AlreadyExists, DeadlineExceeded, FailedPrecondition, Internal, InvalidArgument, NotFound
from .models import (
    AuthConfig,
    ContainerConfig,
    ContainerFilter,
    ContainerInfo,
    ContainerMetadata,
    ContainerState,
    ContainerStats,
    ExecResult,
    FilesystemUsage,
    ImageInfo,
    ImageSpec,
    LinuxResources,
    PodSandboxConfig,
    PodSandboxMetadata,
    RuntimeCondition,
    RuntimeStatus,
    RuntimeVersion,
    SandboxFilter,
    SandboxInfo,
    SandboxState,
)
from .records import RecordStore
from .run_watch import RunWatch
from .spec_map import container_spec, resources_of

RUNTIME_NAME = "enclaveflow"
RUNTIME_VERSION = "0.2.0"
TERMINAL = ("succeeded", "failed", "cancelled")
READY_STATES = ("sandbox-ready", "pulling", "verifying", "attesting", "key-released", "decrypted", "mounted",
                "running")
SANDBOX_START_TIMEOUT = 120.0
IMAGE_TIMEOUT = 900.0
STOP_TIMEOUT = 120.0
AGENT_CALL_TIMEOUT = 60.0


def normalise_image(image: str) -> str:
    """A CRI image name (``busybox``, ``host:5000/app:v1``, ``docker://...``) as a ``docker://`` reference."""
    if not image or len(image) > 4096 or any(c.isspace() for c in image):
        raise InvalidArgument("the image name is empty, too long or contains spaces.")
    if "://" in image or image.startswith("oci:"):
        return image
    first, _, rest = image.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        image = f"docker.io/{image if rest else 'library/' + image}"
    last = image.rsplit("/", 1)[-1]
    if "@" not in image and ":" not in last:
        image += ":latest"
    return f"docker://{image}"


class EngineBackend:
    """``PodBackend`` over the daemon's engine (store + worker), enclave host and CRI records."""

    def __init__(self, *, store: Any, worker: Any, host: Any, spec: Any, watch: RunWatch, state_dir: Path,
                 enclave_config: dict[str, Any], registry_options: Any = None) -> None:
        self.store, self.worker, self.host, self.spec, self.watch = store, worker, host, spec, watch
        self.records = RecordStore(state_dir)
        self.enclave_config = enclave_config
        self.registry_options = registry_options
        self.pod_cidr = ""

    # ---- runtime ---------------------------------------------------------------------------------
    async def version(self) -> RuntimeVersion:
        return RuntimeVersion(name=RUNTIME_NAME, version=RUNTIME_VERSION)

    async def status(self) -> RuntimeStatus:
        ok = shutil.which("bwrap") is not None and shutil.which("runc") is not None
        return RuntimeStatus(conditions=(
            RuntimeCondition("RuntimeReady", ok, "" if ok else "ToolsMissing",
                             "" if ok else "bwrap or runc is not installed"),
            RuntimeCondition("NetworkReady", True, "", "pods share the host network (no CNI)"),
        ), info={"enclaves": len(self.host.manager.list()), "pod_cidr": self.pod_cidr})

    async def update_runtime_config(self, pod_cidr: str) -> None:
        self.pod_cidr = pod_cidr

    # ---- sandboxes -------------------------------------------------------------------------------
    async def run_sandbox(self, config: PodSandboxConfig, runtime_handler: str) -> str:
        md = config.metadata
        run_input = {
            "pod": {"namespace": md.namespace, "name": md.name, "uid": md.uid, "attempt": md.attempt},
            "enclave": self.enclave_config,
            "log_directory": config.log_directory or None,
            "sandbox": {"labels": dict(config.labels), "annotations": dict(config.annotations),
                        "hostname": config.hostname, "runtime_handler": runtime_handler,
                        "created_ns": time.time_ns()},
        }
        key = f"cri-sandbox:{md.uid}:{md.attempt}"
        run_id: str = await self.worker.submit(self.spec, run_input, idempotency_key=key,
                                               pod=(md.namespace, md.name, md.uid))
        row = await self._until(run_id, lambda r: r.state in READY_STATES or r.status in TERMINAL,
                                SANDBOX_START_TIMEOUT, "the pod's enclave to start")
        if row.status in TERMINAL:
            raise Internal(f"the pod's enclave did not start: run {run_id} {self.failure(row)}; "
                           f"see 'enclaveflow runs show {run_id}'.")
        return run_id

    async def stop_sandbox(self, sandbox_id: str) -> None:
        row = self._sandbox(sandbox_id)
        for record in self._records_of(row.id):
            await self._stop_quietly(record, 0)
        await self._end_run(row, "stop")

    async def remove_sandbox(self, sandbox_id: str) -> None:
        try:
            row = self._sandbox(sandbox_id)
        except NotFound:
            return  # removing twice is fine
        await self.stop_sandbox(row.id)
        row = self._row(row.id)
        if row.state == "stopped" and row.status == "waiting":
            self._signal(row.id, "remove", {})
            await self._until(row.id, lambda r: r.status in TERMINAL, STOP_TIMEOUT, "the pod to be removed")
        for record in self._records_of(row.id):
            self.records.drop_container(record["id"])
        self.records.mark_removed(row.id)

    async def sandbox_status(self, sandbox_id: str) -> SandboxInfo:
        return self._sandbox_info(self._sandbox(sandbox_id))

    async def list_sandboxes(self, filter: SandboxFilter) -> Sequence[SandboxInfo]:
        query = sa.select(runs).where(runs.c.workflow == self.spec.spec.name)
        if filter.id:
            query = query.where(runs.c.id.startswith(filter.id, autoescape=True))
        with self.store.engine.connect() as conn:
            rows = conn.execute(query.order_by(runs.c.created_us)).all()
        return [self._sandbox_info(r) for r in rows if not self._removed(r)]

    # ---- images ----------------------------------------------------------------------------------
    async def pull_image(self, image: ImageSpec, auth: AuthConfig | None,
                         sandbox_config: PodSandboxConfig | None) -> str:
        ref = normalise_image(image.image)
        if sandbox_config is not None:
            md = sandbox_config.metadata
            row = self._sandbox_by_pod(md.uid, md.attempt)
            row = await self._ensure_image(row, ref)
            pulled = _results(row)["pulling"]
            return self._remember_image(ref, pulled["config_digest"], pulled["manifest_digest"], pulled["total_bytes"],
                                        pod=row.id)
        from adapters.registry.actions import PullParams, client_options
        from adapters.registry.endpoints import open_source
        from adapters.registry.pull import resolve
        from adapters.registry.reference import parse_reference

        parsed = parse_reference(ref)
        options = client_options(self.enclave_config, PullParams(image=ref))
        source = open_source(parsed, options)
        try:
            resolved = await resolve(source, parsed, options)
        except ActionError as exc:
            raise _image_error(ref, exc) from None
        finally:
            await source.aclose()
        manifest = resolved.manifest
        return self._remember_image(ref, manifest.config.digest, resolved.digest, manifest.total_size, pod=None)

    async def image_status(self, image_id: str) -> ImageInfo | None:
        found = self._find_image(image_id)
        return _image_info(*found) if found else None

    async def list_images(self) -> Sequence[ImageInfo]:
        return [_image_info(i, e) for i, e in sorted(self.records.images().items())]

    async def remove_image(self, image_id: str) -> None:
        found = self._find_image(image_id)
        if found is not None:
            images = self.records.images()
            images.pop(found[0], None)
            self.records.put_images(images)

    async def image_fs_info(self) -> Sequence[FilesystemUsage]:
        root = self.records.root
        used = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        inodes = sum(1 for _ in root.rglob("*"))
        return [FilesystemUsage(timestamp_ns=time.time_ns(), mountpoint=str(root), used_bytes=used,
                                inodes_used=inodes)]

    # ---- containers ------------------------------------------------------------------------------
    async def create_container(self, sandbox_id: str, config: ContainerConfig,
                               sandbox_config: PodSandboxConfig | None) -> str:
        row = self._sandbox(sandbox_id)
        if self._sandbox_info(row).state != SandboxState.READY:
            raise FailedPrecondition(f"sandbox {row.id[:12]} is not ready (state {row.state}); create a new one.")
        md = config.metadata
        for record in self._records_of(row.id):
            if (record["name"], record["attempt"]) == (md.name, md.attempt):
                raise AlreadyExists(f"a container named {md.name!r} (attempt {md.attempt}) exists in this sandbox.")
        ref = normalise_image(config.image.image)
        row = await self._ensure_image(row, ref)
        results = _results(row)
        run_input = _input(row)
        spec = container_spec(config, sandbox_config, run_input.get("log_directory") or "")
        container_id = uuid.uuid4().hex + uuid.uuid4().hex
        status = await self._agent(row, "CreateContainer", container_id=container_id, spec_json=json.dumps(spec),
                                   bundle=results["mounted"]["bundle"],
                                   manifest_digest=results["pulling"]["manifest_digest"])
        record = {
            "id": container_id, "sandbox_id": row.id, "pod_uid": row.pod_uid, "name": md.name,
            "attempt": md.attempt, "image": config.image.image,
            "image_ref": f"sha256:{_hex(results['pulling']['config_digest'])}",
            "labels": dict(config.labels), "annotations": dict(config.annotations),
            "created_ns": int(status.get("created_at") or time.time_ns()), "log_path": spec["log_path"],
            "mounts": spec["mounts"], "resources": spec["resources"], "status": status,
        }
        self.records.put_container(record)
        self._note(row.id, "container.created", {"container": container_id[:12], "name": md.name})
        return container_id

    async def start_container(self, container_id: str) -> None:
        record = self._container(container_id)
        row = self._row(record["sandbox_id"])
        status = await self._agent(row, "StartContainer", container_id=record["id"])
        self._save_status(record, status)
        self._note(row.id, "container.started", {"container": record["id"][:12], "name": record["name"]})

    async def stop_container(self, container_id: str, timeout_s: int) -> None:
        record = self._container(container_id)
        await self._stop_quietly(record, timeout_s)
        self._note(record["sandbox_id"], "container.stopped", {"container": record["id"][:12]})

    async def remove_container(self, container_id: str) -> None:
        try:
            record = self._container(container_id)
        except NotFound:
            return
        row = self._row(record["sandbox_id"])
        if self._enclave_alive(row):
            await self._agent(row, "RemoveContainer", container_id=record["id"])
        self.records.drop_container(record["id"])
        self._note(row.id, "container.removed", {"container": record["id"][:12]})

    async def container_status(self, container_id: str) -> ContainerInfo:
        record = self._container(container_id)
        await self._refresh(record)
        return self._container_info(record, self._row(record["sandbox_id"]))

    async def list_containers(self, filter: ContainerFilter) -> Sequence[ContainerInfo]:
        out = []
        for record in self.records.containers():
            if filter.id and not record["id"].startswith(filter.id):
                continue
            if filter.sandbox_id and not record["sandbox_id"].startswith(filter.sandbox_id):
                continue
            row = self._row_or_none(record["sandbox_id"])
            if row is None:
                continue
            await self._refresh(record)
            out.append(self._container_info(record, row))
        return out

    async def exec_sync(self, container_id: str, cmd: Sequence[str], timeout_s: int) -> ExecResult:
        record = self._container(container_id)
        row = self._row(record["sandbox_id"])
        if not self._enclave_alive(row):
            raise FailedPrecondition("the container's enclave is gone; the container is not running.")
        try:
            code, out, err = await self.host.manager.client(row.pod_uid).exec_sync(record["id"], list(cmd),
                                                                                  float(timeout_s or 0))
        except ActionError as exc:
            raise _container_error(exc) from None
        return ExecResult(stdout=out, stderr=err, exit_code=code)

    async def container_stats(self, container_id: str) -> ContainerStats:
        record = self._container(container_id)
        row = self._row(record["sandbox_id"])
        stats = await self._agent(row, "ContainerStats", container_id=record["id"])
        return ContainerStats(container_id=record["id"], timestamp_ns=int(stats["timestamp"]),
                              cpu_usage_core_ns=int(stats["cpu_usage_ns"]),
                              memory_working_set_bytes=int(stats["memory_working_set_bytes"]),
                              memory_usage_bytes=int(stats["memory_usage_bytes"]))

    async def list_container_stats(self, filter: ContainerFilter) -> Sequence[ContainerStats]:
        out = []
        for info in await self.list_containers(filter):
            if info.state == ContainerState.RUNNING:
                try:
                    out.append(await self.container_stats(info.id))
                except (FailedPrecondition, NotFound):
                    continue  # it exited between the list and the stats: nothing to report
        return out

    async def update_container_resources(self, container_id: str, resources: LinuxResources,
                                         annotations: dict[str, str]) -> None:
        record = self._container(container_id)
        row = self._row(record["sandbox_id"])
        await self._agent(row, "UpdateContainerResources", container_id=record["id"],
                          resources_json=json.dumps(resources_of(resources)))
        record["resources"] = resources_of(resources)
        self.records.put_container(record)

    async def reopen_container_log(self, container_id: str) -> None:
        record = self._container(container_id)
        row = self._row(record["sandbox_id"])
        await self._agent(row, "ReopenContainerLog", container_id=record["id"])

    # ---- the run behind a sandbox ------------------------------------------------------------------
    def _row_or_none(self, run_id: str) -> Any:
        with self.store.engine.connect() as conn:
            return conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()

    def _row(self, run_id: str) -> Any:
        row = self._row_or_none(run_id)
        if row is None:
            raise NotFound(f"no sandbox {run_id[:12]}")
        return row

    def failure(self, row: Any) -> str:
        """Where and why the run failed, in one phrase: 'failed at attesting (AttestationRejected: ...)'."""
        with self.store.engine.connect() as conn:
            last = conn.execute(sa.select(attempts.c.state).where(attempts.c.run_id == row.id,
                                                                  attempts.c.outcome != "ok")
                                .order_by(attempts.c.id.desc()).limit(1)).first()
        where = f"failed at {last.state}" if last is not None else f"{row.status} in {row.state}"
        return f"{where} ({row.error_type}: {row.error_detail})"

    def _sandbox(self, sandbox_id: str) -> Any:
        """The run of a sandbox id or unique id prefix (as crictl's short ids), not removed."""
        if not sandbox_id or len(sandbox_id) > 64:
            raise NotFound(f"no sandbox {sandbox_id[:64]!r}")
        with self.store.engine.connect() as conn:
            rows = conn.execute(sa.select(runs).where(runs.c.workflow == self.spec.spec.name,
                                                      runs.c.id.startswith(sandbox_id, autoescape=True))
                                .limit(2)).all()
        rows = [r for r in rows if not self._removed(r)]
        if len(rows) != 1:
            raise NotFound(f"no sandbox {sandbox_id[:64]!r}" if not rows else
                           f"sandbox id prefix {sandbox_id!r} is ambiguous; give more characters.")
        return rows[0]

    def _sandbox_by_pod(self, uid: str, attempt: int) -> Any:
        with self.store.engine.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.idempotency_key == f"cri-sandbox:{uid}:{attempt}")).first()
        if row is None or self._removed(row):
            raise NotFound(f"no sandbox for pod uid {uid!r} attempt {attempt}; RunPodSandbox first.")
        return row

    def _removed(self, row: Any) -> bool:
        return row.state == "removed" or self.records.is_removed(row.id)

    def _sandbox_info(self, row: Any) -> SandboxInfo:
        run_input = _input(row)
        pod, sandbox = run_input.get("pod", {}), run_input.get("sandbox", {})
        ready = row.status not in TERMINAL and row.state in READY_STATES and self._enclave_alive(row)
        return SandboxInfo(
            id=row.id,
            metadata=PodSandboxMetadata(name=pod.get("name", ""), uid=pod.get("uid", ""),
                                        namespace=pod.get("namespace", ""), attempt=int(pod.get("attempt", 0))),
            state=SandboxState.READY if ready else SandboxState.NOTREADY,
            created_at_ns=int(sandbox.get("created_ns") or row.created_us * 1000),
            labels=sandbox.get("labels", {}), annotations=sandbox.get("annotations", {}),
            runtime_handler=sandbox.get("runtime_handler", ""),
            run_id=row.id, run_state=f"{row.state} ({row.status})",
            last_error=self.failure(row) if row.error_type else None,
            extra_info={"enclave": self._enclave_info(row)},
        )

    def _enclave_alive(self, row: Any) -> bool:
        enclave = self.host.manager.find(row.pod_uid) if row.pod_uid else None
        return enclave is not None and self.host.manager.alive(enclave)

    def _enclave_info(self, row: Any) -> dict[str, Any]:
        enclave = self.host.manager.find(row.pod_uid) if row.pod_uid else None
        if enclave is None:
            return {"running": False}
        return {"running": self.host.manager.alive(enclave), "launch_digest": enclave.launch_digest,
                "agent_pid": enclave.agent_pid}

    async def _until(self, run_id: str, done: Any, timeout: float, what: str) -> Any:
        try:
            return await self.watch.until(run_id, lambda: self._row(run_id), done, timeout)
        except TimeoutError:
            raise DeadlineExceeded(f"waited {timeout:g}s for {what}; see 'enclaveflow runs show {run_id}'.") from None

    def _signal(self, run_id: str, event: str, data: dict[str, Any]) -> None:
        try:
            self.store.signal(run_id, event, data, sender="cri")
        except InvalidState as exc:
            raise FailedPrecondition(str(exc)) from None
        self.worker.wake()
        self.watch.poke(run_id)

    def _note(self, run_id: str, event: str, data: dict[str, Any]) -> None:
        self.store.note(run_id, event, data, actor="cri")

    async def _ensure_image(self, row: Any, ref: str) -> Any:
        """The run, with ``ref`` pulled, verified, decrypted and mounted in its enclave."""
        if row.state == "sandbox-ready" and row.status == "waiting":
            self._signal(row.id, "image", {"image": ref})
        row = await self._until(row.id, lambda r: (r.state == "running" and r.status == "waiting")
                                or r.status in TERMINAL or r.state in ("stopping", "stopped"),
                                IMAGE_TIMEOUT, f"image {ref} to be pulled and mounted in the pod's enclave")
        if row.state != "running":
            raise FailedPrecondition(f"the pod could not get image {ref}: its run {row.id} {self.failure(row)}.")
        held = _input_events(row).get("image", {}).get("image")
        if held != ref:
            raise FailedPrecondition(f"this pod's enclave holds image {held}; one image per pod in this version.")
        return row

    async def _end_run(self, row: Any, how: str) -> None:
        if row.status in TERMINAL:
            if row.pod_uid:
                await self.host.manager.destroy(row.pod_uid)
            return
        if row.state == "running" and row.status == "waiting":
            self._signal(row.id, "stop", {"reason": "StopPodSandbox"})
        elif row.state not in ("stopping", "stopped"):
            self.store.request_cancel(row.id, actor="cri")
            self.worker.wake()
            self.watch.poke(row.id)
        await self._until(row.id, lambda r: r.status in TERMINAL or (r.state == "stopped" and r.status == "waiting"),
                          STOP_TIMEOUT, "the pod to stop")

    # ---- containers' helpers -----------------------------------------------------------------------
    def _container(self, container_id: str) -> dict[str, Any]:
        if not container_id or len(container_id) > 64 or any(c not in "0123456789abcdef" for c in container_id):
            raise NotFound(f"no container {container_id[:64]!r}")
        matches = [i for i in self.records.container_ids() if i.startswith(container_id)]
        if len(matches) != 1:
            raise NotFound(f"no container {container_id!r}" if not matches else
                           f"container id prefix {container_id!r} is ambiguous; give more characters.")
        record = self.records.container(matches[0])
        if record is None:
            raise NotFound(f"no container {container_id!r}")
        return record

    def _records_of(self, sandbox_id: str) -> list[dict[str, Any]]:
        return [r for r in self.records.containers() if r["sandbox_id"] == sandbox_id]

    async def _agent(self, row: Any, method: str, **fields: Any) -> Any:
        if not self._enclave_alive(row):
            raise FailedPrecondition(f"the enclave of sandbox {row.id[:12]} is not running (run {row.state}).")
        from adapters.tee.agent_client import TransportFailure

        try:
            return await self.host.manager.client(row.pod_uid).container(method, AGENT_CALL_TIMEOUT, **fields)
        except TransportFailure as exc:
            raise FailedPrecondition(f"the pod's agent did not answer {method}: {exc}") from None
        except ActionError as exc:
            raise _container_error(exc) from None

    async def _refresh(self, record: dict[str, Any]) -> bool:
        """Update the record's status from the agent; False when the enclave is gone (last status kept)."""
        row = self._row_or_none(record["sandbox_id"])
        if row is None or not self._enclave_alive(row):
            status = dict(record.get("status") or {})
            if status.get("state") in ("CREATED", "RUNNING", "UNKNOWN"):
                status.update(state="EXITED", reason=status.get("reason") or "Error",
                              message="the pod's enclave is gone", finished_at=status.get("finished_at") or
                              time.time_ns(), exit_code=status.get("exit_code") or 137)
                self._save_status(record, status)
            return False
        try:
            status = await self._agent(row, "ContainerStatus", container_id=record["id"])
        except (FailedPrecondition, NotFound):
            return False
        self._save_status(record, status)
        return True

    def _save_status(self, record: dict[str, Any], status: dict[str, Any]) -> None:
        record["status"] = status
        if self.records.container(record["id"]) is not None:
            self.records.put_container(record)

    def _container_info(self, record: dict[str, Any], row: Any) -> ContainerInfo:
        status = record.get("status") or {}
        state = ContainerState[status.get("state", "UNKNOWN")]
        return ContainerInfo(
            id=record["id"], sandbox_id=record["sandbox_id"],
            metadata=ContainerMetadata(name=record["name"], attempt=record["attempt"]),
            image=ImageSpec(image=record["image"]), image_ref=record["image_ref"], state=state,
            created_at_ns=int(status.get("created_at") or record["created_ns"]),
            started_at_ns=int(status.get("started_at") or 0), finished_at_ns=int(status.get("finished_at") or 0),
            exit_code=int(status.get("exit_code") or 0), reason=status.get("reason") or "",
            message=status.get("message") or "", labels=record["labels"], annotations=record["annotations"],
            log_path=record["log_path"], pid=int(status.get("pid") or 0),
            resources=LinuxResources(**record["resources"]) if record.get("resources") else None,
            run_state=f"{row.state} ({row.status})",
            last_error=f"{row.error_type}: {row.error_detail}" if row.error_type else None,
        )

    async def _stop_quietly(self, record: dict[str, Any], timeout_s: int) -> None:
        row = self._row_or_none(record["sandbox_id"])
        if row is None or not self._enclave_alive(row):
            return
        try:
            status = await self._agent(row, "StopContainer", container_id=record["id"],
                                       timeout_seconds=float(timeout_s))
        except NotFound:
            return
        self._save_status(record, status)

    # ---- images' helpers -----------------------------------------------------------------------------
    def _remember_image(self, ref: str, config_digest: str, manifest_digest: str, size: int, pod: str | None) -> str:
        image_id = f"sha256:{_hex(config_digest)}"
        images = self.records.images()
        entry = images.setdefault(image_id, {"repo_tags": [], "repo_digests": [], "size": size, "pods": []})
        name = ref.removeprefix("docker://")
        repo = name.split("@", 1)[0].rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] or "@" in name else name
        if "@" not in name and name not in entry["repo_tags"]:
            entry["repo_tags"].append(name)
        digest_ref = f"{repo}@{manifest_digest}"
        if digest_ref not in entry["repo_digests"]:
            entry["repo_digests"].append(digest_ref)
        if pod and pod not in entry["pods"]:
            entry["pods"].append(pod)
        entry["size"] = size
        self.records.put_images(images)
        return image_id

    def _find_image(self, image: str) -> tuple[str, dict[str, Any]] | None:
        images = self.records.images()
        if image in images:
            return image, images[image]
        if image.startswith("sha256:") or all(c in "0123456789abcdef" for c in image):
            want = image.removeprefix("sha256:")
            hits = [(i, e) for i, e in images.items() if want and i.removeprefix("sha256:").startswith(want)]
            if len(hits) == 1:
                return hits[0]
        try:
            name = normalise_image(image).removeprefix("docker://")
        except InvalidArgument:
            return None
        for image_id, entry in images.items():
            if name in entry["repo_tags"] or name in entry["repo_digests"]:
                return image_id, entry
        return None


def _image_info(image_id: str, entry: dict[str, Any]) -> ImageInfo:
    return ImageInfo(id=image_id, repo_tags=tuple(entry.get("repo_tags", ())),
                     repo_digests=tuple(entry.get("repo_digests", ())), size=int(entry.get("size", 0)),
                     extra_info={"pods": entry.get("pods", [])})


def _hex(digest: str) -> str:
    return digest.split(":", 1)[-1]


def _input(row: Any) -> dict[str, Any]:
    return dict(json.loads(row.context).get("input") or {})


def _results(row: Any) -> dict[str, Any]:
    return dict(json.loads(row.context).get("results") or {})


def _input_events(row: Any) -> dict[str, Any]:
    return dict(json.loads(row.context).get("events") or {})


def _container_error(exc: ActionError) -> Exception:
    names = exc.names()
    if "ContainerNotFound" in names:
        return NotFound(exc.message)
    if "ExecTimeout" in names:
        return DeadlineExceeded(exc.message)
    if "InvalidContainerSpec" in names or "InvalidParams" in names:
        return InvalidArgument(exc.message)
    if "ContainerExists" in names:
        return AlreadyExists(exc.message)
    return FailedPrecondition(f"{exc.name}: {exc.message}")


def _image_error(ref: str, exc: ActionError) -> Exception:
    if "ManifestUnknown" in exc.names() or "NameUnknown" in exc.names():
        return NotFound(f"image {ref} not found: {exc.message}")
    return FailedPrecondition(f"pulling {ref} failed: {exc.name}: {exc.message}")


