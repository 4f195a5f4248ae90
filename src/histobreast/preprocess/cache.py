"""On-disk cache of pre-processed arrays (normalised images, grids, KREM windows and crops).

An entry is keyed by a mapping such as ``{"file": file_fingerprint(path), "stage": "krem",
"params": {...}}``: the mapping is written as canonical JSON (sorted keys, tuples as lists) and
hashed with SHA-256, so changing any parameter, the file's content or :data:`CACHE_FORMAT`
gives a new entry. Entries are ``.npy`` (one array) or ``.npz`` (a dict of arrays, uncompressed),
never pickles, written to a temporary file and renamed into place: two processes filling the
same entry at once both compute it and the last rename wins, and a reader sees a whole file or
none. A file that cannot be read back (disk trouble, a hand-edited cache) is recomputed and
replaced, with a warning.
"""

from __future__ import annotations

import functools
import hashlib
import json
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from histobreast.atomic import atomic_path
from histobreast.config import to_jsonable
from histobreast.errors import ConfigError, DatasetError

# Bump when the layout of entries changes: every old entry then misses.
CACHE_FORMAT = 1
_CHUNK = 1 << 20

Value = TypeVar("Value", np.ndarray, dict[str, np.ndarray])


def cache_key_digest(key: Mapping[str, Any]) -> str:
    """SHA-256 hex digest of the canonical JSON of ``key`` (plus the cache format version)."""
    try:
        canonical = json.dumps({"format": CACHE_FORMAT, "key": to_jsonable(key)}, sort_keys=True, separators=(",", ":"))
    except TypeError as err:  # a value json cannot write (e.g. an arbitrary object)
        raise ConfigError(f"cache key {key!r}: a value has no stable JSON form ({err})") from None
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@functools.lru_cache(maxsize=65536)
def _hash_file(path: str, size: int, mtime_ns: int, inode: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_fingerprint(path: str | Path) -> str:
    """SHA-256 of the file's bytes (remembered in-process while its size, mtime and inode are unchanged)."""
    path = Path(path)
    try:
        stat = path.stat()
        return _hash_file(str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    except OSError as err:
        raise DatasetError(f"{path}: cannot read file to fingerprint it ({err.strerror or err})") from None


class DiskCache:
    """Content-and-parameter keyed store of arrays under ``root`` (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path_for(self, key: Mapping[str, Any]) -> Path:
        """Entry path of ``key`` without its suffix: ``root/ab/abcdef...``."""
        digest = cache_key_digest(key)
        return self.root / digest[:2] / digest

    def get_or_compute(self, key: Mapping[str, Any], compute: Callable[[], Value]) -> Value:
        """The stored value of ``key``, or ``compute()``'s result after storing it.

        ``compute`` must return a numpy array or a dict of numpy arrays (str keys); a hit returns
        an equal array (dtype and shape included), or a dict with the same keys.
        """
        base = self.path_for(key)
        for suffix in (".npy", ".npz"):
            entry = base.with_suffix(suffix)
            if entry.exists():
                try:
                    return self._load(entry)
                except (OSError, ValueError, EOFError) as err:
                    warnings.warn(f"cache entry {entry} is unreadable ({err}); recomputing it", stacklevel=2)
        value = compute()
        self._store(base, value)
        return value

    @staticmethod
    def _load(entry: Path) -> Any:
        if entry.suffix == ".npy":
            return np.load(entry, allow_pickle=False)
        with np.load(entry, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}

    @staticmethod
    def _store(base: Path, value: Any) -> None:
        if isinstance(value, np.ndarray):
            with atomic_path(base.with_suffix(".npy")) as tmp, open(tmp, "wb") as fh:
                np.save(fh, value, allow_pickle=False)
        elif isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, np.ndarray) for k, v in value.items()
        ):
            # What np.savez writes, without its keyword clash on entry names such as "file".
            with atomic_path(base.with_suffix(".npz")) as tmp, zipfile.ZipFile(tmp, "w") as archive:
                for name, array in value.items():
                    with archive.open(f"{name}.npy", "w", force_zip64=True) as fh:
                        np.lib.format.write_array(fh, array, allow_pickle=False)
        else:
            raise ConfigError(
                f"cache values must be a numpy array or a dict of str -> numpy array, got {type(value).__name__}"
            )
