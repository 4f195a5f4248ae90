"""Atomic writes: all-or-nothing replacement and ordinary file permissions."""

from __future__ import annotations

import os
import stat

import pytest

from histobreast.atomic import atomic_path, atomic_write_json, atomic_write_text


def test_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "report.md"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.md"]


def test_failed_write_keeps_old_content(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_permissions_follow_umask_not_mkstemp(tmp_path):
    target = atomic_write_text(tmp_path / "a.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask


def test_unwritable_place_names_the_target_not_a_temporary(tmp_path):
    blocker = tmp_path / "report"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(OSError) as info:
        atomic_write_text(blocker / "report.md", "x")
    assert info.value.filename == str(blocker / "report.md") and "cannot write here" in info.value.strerror
    assert blocker.read_text() == "a file where a folder should be"
