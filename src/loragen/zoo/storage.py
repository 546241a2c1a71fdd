"""Storage: where a zoo's files live, a local folder or any fsspec URL, with the zoo's atomicity guarantees.

A zoo needs two kinds of writes that a reader never sees half done: replacing a whole file (shards, zoo.json, the
repaired manifest) and appending one task's manifest lines.
- Local folders (a path, or a file:// URL): a temporary file + fsync + rename, and an appended write + fsync.
- Object stores and fsspec's memory:// (ATOMIC_PUT): one put replaces a whole object, which a reader sees entirely or
  not at all. They cannot append, so an append rewrites the manifest with one put: safe because the collecting
  driver is the zoo's single writer, and the manifest is small (one line per checkpoint).
- Any other fsspec backend (ftp, sftp, http, ...) writes a file as a stream that a crash can leave half written; a
  zoo there is refused with a clear error, never written without the guarantee.
"""

from __future__ import annotations

import os
from pathlib import Path

from loragen import atomic
from loragen.errors import ZooError

ATOMIC_PUT = ("memory", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")  # protocols whose put replaces an object whole


def is_url(path: str | Path) -> bool:
    return isinstance(path, str) and "://" in path


class Storage:
    """Files under one root: a local folder (`local` True) or an fsspec URL on an ATOMIC_PUT backend."""

    def __init__(self, root: str | Path):
        self.local = not is_url(root) or str(root).startswith("file://")
        if self.local:
            self.root: str | Path = Path(str(root)[len("file://"):] if str(root).startswith("file://") else root)
            self.fs = None
            return
        try:
            import fsspec
        except ImportError as e:
            raise ZooError(f"a zoo at a URL ({root}) needs fsspec: pip install fsspec") from e
        protocol = str(root).split("://", 1)[0]
        if protocol not in ATOMIC_PUT:
            raise ZooError(f"a zoo needs writes that a crash cannot leave half done: expected a local folder or a URL "
                           f"of {', '.join(p + '://' for p in ATOMIC_PUT)}; found {protocol}:// ({root})")
        try:
            self.fs, path = fsspec.core.url_to_fs(str(root))
        except (ImportError, ValueError) as e:  # e.g. s3:// without s3fs installed: fsspec says which package to install
            raise ZooError(f"cannot open {root}: {e}") from e
        self.root = str(root).rstrip("/")
        self._base = path.rstrip("/")

    def __str__(self) -> str:
        return str(self.root)

    def _remote(self, rel: str) -> str:
        return f"{self._base}/{rel}" if rel else self._base

    # ---- queries ------------------------------------------------------------------------------------------------
    def exists(self, rel: str = "") -> bool:
        return (self.root / rel).exists() if self.local else self.fs.exists(self._remote(rel))

    def is_file(self, rel: str) -> bool:
        return (self.root / rel).is_file() if self.local else self.fs.isfile(self._remote(rel))

    def is_empty(self) -> bool:
        """True when the root is missing or holds nothing."""
        if self.local:
            return not self.root.exists() or not any(self.root.iterdir())
        return not self.fs.exists(self._base) or not self.fs.ls(self._base)

    def read_bytes(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes() if self.local else self.fs.cat_file(self._remote(rel))

    def size_bytes(self) -> int:
        if self.local:
            return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
        return int(self.fs.du(self._base, total=True))

    def where(self, rel: str) -> str:
        """The file's path or URL, for messages."""
        return str(self.root / rel) if self.local else f"{self.root}/{rel}"

    # ---- writes -------------------------------------------------------------------------------------------------
    def make_root(self, *subfolders: str) -> None:
        if self.local:
            for s in subfolders:
                (self.root / s).mkdir(parents=True, exist_ok=True)
        # object stores have no folders: a file's key makes its prefix

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Replace a whole file atomically."""
        if self.local:
            atomic.write_bytes(self.root / rel, data)
        else:
            self.fs.pipe_file(self._remote(rel), data)

    def append(self, rel: str, data: bytes) -> None:
        """Append `data` in one write (local: appended and fsynced; object stores: the file rewritten with one put)."""
        if self.local:
            with open(self.root / rel, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        else:
            old = self.read_bytes(rel) if self.exists(rel) else b""
            self.fs.pipe_file(self._remote(rel), old + data)
