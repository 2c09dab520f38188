"""Judgement files (JSONL), one judged query per line:

    {"id": "q1", "family": "exact_caption", "text": "great white shark", "image": "queries/x.jpg",
     "relevant": {"asset-7": 2, "asset-9": 1}, "split": "heldout"}

`text` and/or `image` (a path, relative to --images-root, else to the file's folder); `relevant`
maps asset ids to grades >= 1 (a list of ids means grade 1 each); `family` groups queries in the
report (default "all"); `split` lets a run keep to a held-out part. Every error names file and line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.evaluation.domain import Judgement


class JudgementError(ValueError):
    """A judgement file that cannot be used, with the file and line to fix."""


def load_judgements(path: Path, images_root: Path | None = None) -> list[Judgement]:
    root = images_root or path.parent
    out: list[Judgement] = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise JudgementError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise JudgementError(f"{where}: each line must be a JSON object")
        judgement = _judgement(row, where, root, default_id=f"{path.stem}:{number}")
        if judgement.query_id in seen:
            raise JudgementError(f"{where}: query id {judgement.query_id!r} appears twice")
        seen.add(judgement.query_id)
        out.append(judgement)
    return out


def _judgement(row: dict[str, Any], where: str, root: Path, default_id: str) -> Judgement:
    text = row.get("text", "")
    image = row.get("image")
    if not isinstance(text, str) or (image is not None and not isinstance(image, str)):
        raise JudgementError(f"{where}: `text` and `image` must be strings")
    if not text.strip() and not image:
        raise JudgementError(f"{where}: give a `text`, an `image`, or both")
    image_path = None
    if image:
        image_path = Path(image) if Path(image).is_absolute() else root / image
    relevant = row.get("relevant")
    if isinstance(relevant, list):
        relevant = {str(asset_id): 1 for asset_id in relevant}
    if not isinstance(relevant, dict) or not relevant:
        raise JudgementError(f"{where}: `relevant` must be a non-empty object of asset id -> grade")
    grades: dict[str, int] = {}
    for asset_id, grade in relevant.items():
        if not isinstance(grade, int) or isinstance(grade, bool) or grade < 1:
            raise JudgementError(f"{where}: grade of {asset_id!r} must be an integer >= 1, got {grade!r}")
        grades[str(asset_id)] = grade
    return Judgement(
        query_id=str(row.get("id") or default_id),
        family=str(row.get("family") or "all"),
        text=text,
        image=image_path,
        relevant=grades,
        split=str(row.get("split") or ""),
    )
