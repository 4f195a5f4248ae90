"""DiskCache: identical values on a hit, a miss when file content or a parameter changes, atomic
entries, and two processes filling the same entries at once."""

from __future__ import annotations

import multiprocessing
import warnings
from pathlib import Path

import numpy as np
import pytest

from histobreast.errors import ConfigError, DatasetError
from histobreast.preprocess.cache import DiskCache, cache_key_digest, file_fingerprint
from histobreast.preprocess.krem import KremParams


class _Counter:
    """A compute function that counts its calls."""

    def __init__(self, value) -> None:
        self.value, self.calls = value, 0

    def __call__(self):
        self.calls += 1
        return self.value


def test_hit_returns_identical_arrays(tmp_path) -> None:
    cache = DiskCache(tmp_path)
    array = np.random.default_rng(0).random((15, 8, 8, 3)).astype(np.float32)
    compute = _Counter(array)
    key = {"file": "abc", "stage": "grid", "params": {"grid": (5, 3), "patch_size": 224}}
    first = cache.get_or_compute(key, compute)
    second = cache.get_or_compute(dict(reversed(list(key.items()))), compute)  # key order is irrelevant
    assert compute.calls == 1
    assert second.dtype == array.dtype and second.shape == array.shape and np.array_equal(second, array)
    assert first is array


def test_dict_values_round_trip(tmp_path) -> None:
    cache = DiskCache(tmp_path)
    value = {
        "boxes": np.arange(12, dtype=np.int64).reshape(1, 3, 4),
        "counts": np.array([[5, 3, 1]]),
        "file": np.zeros(2),
    }  # "file" clashes with np.savez's own argument name
    compute = _Counter(value)
    cache.get_or_compute({"stage": "krem"}, compute)
    hit = cache.get_or_compute({"stage": "krem"}, compute)
    assert compute.calls == 1 and hit.keys() == value.keys()
    assert all(np.array_equal(hit[k], v) and hit[k].dtype == v.dtype for k, v in value.items())


def test_changed_parameter_or_content_misses(tmp_path) -> None:
    cache = DiskCache(tmp_path / "cache")
    image = tmp_path / "a.png"
    image.write_bytes(b"first content")
    key = {"file": file_fingerprint(image), "stage": "krem", "params": KremParams().to_dict()}
    compute = _Counter(np.ones(3))
    cache.get_or_compute(key, compute)
    cache.get_or_compute({**key, "params": KremParams(min_area=81).to_dict()}, compute)
    assert compute.calls == 2
    image.write_bytes(b"other content")
    cache.get_or_compute({**key, "file": file_fingerprint(image)}, compute)
    assert compute.calls == 3
    cache.get_or_compute(key, compute)  # the original entry is still there
    assert compute.calls == 3


def test_file_fingerprint_is_the_content_hash(tmp_path) -> None:
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"abc")
    b.write_bytes(b"abc")
    # sha256("abc"), a standard test vector.
    assert (
        file_fingerprint(a) == file_fingerprint(b) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    with pytest.raises(DatasetError, match="missing.bin: cannot read file"):
        file_fingerprint(tmp_path / "missing.bin")


def test_key_digest_is_stable_and_rejects_unstable_values() -> None:
    assert cache_key_digest({"a": (1, 2), "b": Path("x")}) == cache_key_digest({"b": "x", "a": [1, 2]})
    assert cache_key_digest({"a": 1}) != cache_key_digest({"a": 2})
    with pytest.raises(ConfigError, match="no stable JSON form"):
        cache_key_digest({"a": object()})


def test_values_must_be_arrays(tmp_path) -> None:
    with pytest.raises(ConfigError, match="numpy array or a dict of str -> numpy array, got list"):
        DiskCache(tmp_path).get_or_compute({"a": 1}, lambda: [1, 2])


def test_unreadable_entry_is_recomputed(tmp_path) -> None:
    cache = DiskCache(tmp_path)
    cache.get_or_compute({"k": 1}, lambda: np.arange(4))
    entry = cache.path_for({"k": 1}).with_suffix(".npy")
    entry.write_bytes(b"not an npy file")
    with pytest.warns(UserWarning, match="unreadable"):
        value = cache.get_or_compute({"k": 1}, lambda: np.arange(4))
    assert np.array_equal(value, np.arange(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(cache.get_or_compute({"k": 1}, lambda: None), np.arange(4))  # repaired


def _fill(root: str, start: multiprocessing.synchronize.Barrier, results: multiprocessing.Queue) -> None:
    """Worker: once both workers are ready, fill the same 30 entries of 2 MiB arrays."""
    cache = DiskCache(root)
    start.wait()
    sums: list[float] | str = []
    try:
        for i in range(30):
            value = cache.get_or_compute({"i": i}, lambda i=i: np.full((256, 1024), i, dtype=np.float64))
            sums.append(float(value.sum()))
    except Exception as err:  # reported to the test instead of leaving it waiting on the queue
        sums = f"{type(err).__name__}: {err}"
    results.put(sums)


def test_two_processes_fill_the_same_entries(tmp_path) -> None:
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_fill, args=(str(tmp_path), start, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    outputs = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    expected = [float(i * 256 * 1024) for i in range(30)]
    assert outputs == [expected, expected]
    files = sorted(tmp_path.rglob("*"))
    assert not [f for f in files if f.name.endswith(".tmp")]  # no temporary file left behind
    cache = DiskCache(tmp_path)
    for i in range(30):
        assert np.array_equal(cache.get_or_compute({"i": i}, lambda: None), np.full((256, 1024), i, np.float64))
