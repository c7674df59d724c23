"""Unpacking an image's layers in parallel: blob -> decrypt -> decompress -> tar, diff_id checked.

Each layer is extracted by one worker thread into a temporary directory next to its final place
and renamed there only after its diff_id matched; the heavy steps (AES, HMAC, SHA-256, inflate, file
writes) release the GIL, so layers really do run side by side. If any layer fails - or the caller
sets ``stop`` (Ctrl-C, SIGTERM, a deadline) - the others are stopped at their next read, no retry
starts, and every directory this call created is removed once the workers have ended. Every layer
of the manifest is unpacked in its own directory (``NNNN-<diff_id>``), even when a diff_id repeats:
[A, B, A] must apply A again above B, and every blob must be checked.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from adapters.registry.media import Descriptor
from adapters.registry.options import RetryPolicy
from engine.errors import TransientError

from .errors import DiffIdMismatch, UnpackError
from .fstree import remove_quietly, remove_tree
from .layer_stream import ByteBudget, HashingReader, compression_of, decompressing_reader
from .unpack import LayerTree, UnpackPolicy, extract_layer

Progress = Callable[[str, dict[str, Any]], None]
READ_BUFFER = 1 << 20


class Aborted(UnpackError):
    """Another layer of the same image failed, so this one stopped early."""


@dataclass(frozen=True)
class LayerJob:
    """One layer to unpack. ``opener`` streams the blob instead of reading ``blob`` from disk; it must
    verify the blob's digest by EOF (``finish()``), and transient failures retry per ``retry``."""

    index: int
    desc: Descriptor
    diff_id: str
    blob: Path
    opener: Callable[[], AbstractContextManager[BinaryIO]] | None = None
    retry: RetryPolicy | None = None


@dataclass
class LayerResult:
    """One unpacked layer: secret-free figures plus its tree (directory, whiteouts)."""

    index: int
    digest: str
    diff_id: str
    media_type: str
    encrypted: bool
    compressed_bytes: int
    bytes: int
    entries: int
    seconds: float
    tree: LayerTree

    def summary(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "diff_id": self.diff_id,
            "media_type": self.media_type,
            "encrypted": self.encrypted,
            "compressed_bytes": self.compressed_bytes,
            "bytes": self.bytes,
            "entries": self.entries,
            "seconds": round(self.seconds, 4),
        }


class _AbortableBudget(ByteBudget):
    """The shared byte budget doubles as the stop signal for sibling layers (and for the caller)."""

    def __init__(self, limit: int, stop: threading.Event | None = None) -> None:
        super().__init__(limit)
        self.stop = stop or threading.Event()

    def take(self, n: int) -> None:
        if self.stop.is_set():
            raise Aborted("Unpacking stopped because another layer of the image failed.")
        super().take(n)


def layer_dir(dest: Path, index: int, diff_id: str) -> Path:
    """Where the layer at manifest position ``index`` is unpacked (one directory per position)."""
    return dest / f"{index:04d}-{diff_id.replace(':', '-')}"


def unpack_layer(
    job: LayerJob, keys: Any, dest: Path, policy: UnpackPolicy, budget: ByteBudget
) -> LayerResult:
    """Decrypt, decompress, check and extract one layer into ``dest/<diff_id>``; nothing left on error."""
    from .ocicrypt import open_decrypting_reader

    started = time.perf_counter()
    final = layer_dir(dest, job.index, job.diff_id)
    tmp = dest / f".{final.name}.{os.getpid()}.{threading.get_ident():x}.tmp"
    tmp.mkdir()  # never parents: a cleanup that already removed ``dest`` must not be undone
    try:
        opener = job.opener or (lambda: open(job.blob, "rb", buffering=0))
        with opener() as raw:
            plain: Any = open_decrypting_reader(job.desc.to_json(), raw, keys)
            if plain is not raw or job.opener is not None:
                plain = io.BufferedReader(plain, READ_BUFFER)
            tar_stream = decompressing_reader(plain, compression_of(job.desc.media_type))
            hashed = HashingReader(tar_stream, job.diff_id, budget)
            try:
                tree = extract_layer(hashed, tmp, policy)
                hashed.drain()
            except BaseException:
                budget.give_back(hashed.bytes)  # a retry starts the layer from scratch
                raise
            finish = getattr(raw, "finish", None)
            if finish is not None:
                finish()  # a streamed blob: read any rest and check its digest before accepting
        if not hmac.compare_digest(hashed.digest().encode(), job.diff_id.encode()):
            raise DiffIdMismatch(
                f"Layer {job.index} ({job.desc.digest[:19]}) does not match its diff_id; "
                "the image is corrupt or tampered."
            )
        remove_tree(final)
        os.rename(tmp, final)
    except BaseException:
        remove_quietly(tmp)
        raise
    tree.path = final
    _save_tree(tree)
    return LayerResult(
        job.index,
        job.desc.digest,
        job.diff_id,
        job.desc.media_type,
        job.desc.encrypted,
        job.desc.size,
        hashed.bytes,
        tree.entries,
        time.perf_counter() - started,
        tree,
    )


def _save_tree(tree: LayerTree) -> None:
    """Whiteouts etc. next to the layer dir, so a later ``image.mount`` can compose without re-reading."""
    meta = {
        "entries": tree.entries,
        "whiteouts": tree.whiteouts,
        "opaque_dirs": tree.opaque_dirs,
        "lower_links": tree.lower_links,
    }
    tree.path.with_name(tree.path.name + ".json").write_text(json.dumps(meta))


def load_tree(dest: Path, index: int, diff_id: str) -> LayerTree:
    path = layer_dir(dest, index, diff_id)
    meta = json.loads(path.with_name(path.name + ".json").read_text())
    return LayerTree(
        path,
        meta["entries"],
        meta["whiteouts"],
        meta["opaque_dirs"],
        [(a, b) for a, b in meta["lower_links"]],
    )


def unpack_layers(
    jobs: Sequence[LayerJob],
    keys: Any,
    dest: Path,
    policy: UnpackPolicy,
    workers: int | None = None,
    progress: Progress | None = None,
    prepare: Callable[[LayerJob], None] | None = None,
    stop: threading.Event | None = None,
) -> list[LayerResult]:
    """Unpack ``jobs`` in parallel (``workers`` threads, default: CPUs); all or nothing.

    ``prepare(job)`` runs in the worker first - e.g. downloading the blob - so fetching one layer
    overlaps unpacking another. Setting ``stop`` makes every worker give up at its next read.
    """
    dest.mkdir(parents=True, exist_ok=True)
    budget = _AbortableBudget(policy.max_bytes, stop)
    workers = max(1, min(len(jobs) or 1, workers or os.cpu_count() or 1))

    def run(job: LayerJob) -> LayerResult:
        if progress:
            progress("layer-start", {"index": job.index, "digest": job.desc.digest, "size": job.desc.size})
        try:
            if budget.stop.is_set():
                raise Aborted("Unpacking stopped before this layer started.")
            if prepare is not None:
                prepare(job)
            result = _with_retries(job, lambda: unpack_layer(job, keys, dest, policy, budget), budget)
        except BaseException:
            budget.stop.set()
            raise
        if progress:
            progress("layer-done", result.summary() | {"index": job.index})
        return result

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="unpack") as pool:
        futures = [pool.submit(run, job) for job in jobs]
        outcomes: list[LayerResult | BaseException] = []
        for fut in futures:
            try:
                outcomes.append(fut.result())
            except BaseException as exc:  # noqa: BLE001 - collected, re-raised below after cleanup
                outcomes.append(exc)
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    if errors:
        for o in outcomes:
            if isinstance(o, LayerResult):
                _remove_layer(o.tree.path)
        raise next((e for e in errors if not isinstance(e, Aborted)), errors[0])
    return [o for o in outcomes if isinstance(o, LayerResult)]


def _with_retries(job: LayerJob, attempt: Callable[[], LayerResult], budget: _AbortableBudget) -> LayerResult:
    """Streamed layers restart from scratch on a transient network failure (the policy's attempts)."""
    tries = job.retry.attempts if job.retry is not None and job.opener is not None else 1
    for n in range(1, tries + 1):
        try:
            return attempt()
        except TransientError as exc:
            if n == tries or budget.stop.is_set() or not getattr(exc, "retryable_here", True):
                raise
            # Waiting on the stop event: a cancelled pull does not sleep out its backoff.
            if budget.stop.wait(job.retry.delay(n)):  # type: ignore[union-attr]
                raise
    raise AssertionError("unreachable")


def _remove_layer(path: Path) -> None:
    remove_quietly(path)
    with contextlib.suppress(FileNotFoundError):
        path.with_name(path.name + ".json").unlink()
