"""replace_durably: the whole new content or the old one, and no temporary file left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.common import files
from services.common.files import replace_durably, write_json_durably


def test_a_replace_writes_the_whole_content_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "state" / "job.json"
    write_json_durably(target, {"cursor": "a"})
    write_json_durably(target, {"cursor": "b"})
    assert json.loads(target.read_text()) == {"cursor": "b"}
    assert [p.name for p in target.parent.iterdir()] == ["job.json"]


def test_a_failed_replace_keeps_the_old_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "blob"
    replace_durably(target, b"old")

    def broken_replace(src: str, dst: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        replace_durably(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["blob"]
