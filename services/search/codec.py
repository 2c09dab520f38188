"""JSON encoding of domain objects: the embedded backend's records and the Redis cache's values."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from services.search.domain import AssetDoc, Hit, ModelRef, SafetyLabel, Scores

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


# Integer arithmetic, not float seconds: a float has too few digits for microseconds near the ends of
# the timestamp range (9999-12-31T23:59:59.999999 would round up to year 10000 and fail to load).
def ts_us(dt: datetime | None) -> int | None:
    return None if dt is None else (dt - _EPOCH) // _US


def from_us(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=us)


def doc_to_dict(doc: AssetDoc) -> dict[str, Any]:
    return {
        "asset_id": doc.asset_id,
        "uri": doc.uri,
        "caption": doc.caption,
        "tags": list(doc.tags),
        "ocr_text": doc.ocr_text,
        "owner": doc.owner,
        "license_name": doc.license_name,
        "license_expires_at": ts_us(doc.license_expires_at),
        "safety_labels": [[s.label, s.score] for s in doc.safety_labels],
        "safety_score": doc.safety_score,
        "source": doc.source,
        "created_at": ts_us(doc.created_at),
        "updated_at": ts_us(doc.updated_at),
        "width": doc.width,
        "height": doc.height,
        "content_sha256": doc.content_sha256,
        "embedding_model": [doc.embedding_model.name, doc.embedding_model.version]
        if doc.embedding_model
        else None,
        "popularity": doc.popularity,
        "analysis_state": doc.analysis_state,
    }


def doc_from_dict(d: dict[str, Any]) -> AssetDoc:
    return AssetDoc(
        asset_id=d["asset_id"],
        uri=d["uri"],
        caption=d["caption"],
        tags=tuple(d["tags"]),
        ocr_text=d["ocr_text"],
        owner=d["owner"],
        license_name=d["license_name"],
        license_expires_at=from_us(d["license_expires_at"]),
        safety_labels=tuple(SafetyLabel(label, float(score)) for label, score in d["safety_labels"]),
        safety_score=float(d["safety_score"]),
        source=d["source"],
        created_at=from_us(d["created_at"]),
        updated_at=from_us(d["updated_at"]),
        width=int(d["width"]),
        height=int(d["height"]),
        content_sha256=d["content_sha256"],
        embedding_model=ModelRef(*d["embedding_model"]) if d["embedding_model"] else None,
        popularity=float(d["popularity"]),
        analysis_state=str(d.get("analysis_state") or ""),  # absent in records written before states
    )


def doc_to_json(doc: AssetDoc) -> str:
    return json.dumps(doc_to_dict(doc), separators=(",", ":"))


def doc_from_json(raw: str) -> AssetDoc:
    return doc_from_dict(json.loads(raw))


def hits_to_bytes(hits: list[Hit]) -> bytes:
    out = []
    for h in hits:
        s = h.scores
        out.append(
            {
                "d": doc_to_dict(h.doc),
                "s": [s.fused, s.keyword_contribution, s.vector_contribution, s.bm25, s.cosine_similarity],
                "w": s.vector_weight,
                "v": None
                if h.vector is None
                else base64.b64encode(h.vector.astype("<f4").tobytes()).decode(),
            }
        )
    return json.dumps(out, separators=(",", ":")).encode()


def hits_from_bytes(raw: bytes) -> list[Hit]:
    hits = []
    for h in json.loads(raw):
        vec = None if h["v"] is None else np.frombuffer(base64.b64decode(h["v"]), dtype="<f4")
        fused, keyword, vector, bm25, cosine = h["s"]
        scores = Scores(fused, keyword, vector, bm25, cosine, vector_weight=h.get("w", 0.0))
        hits.append(Hit(doc_from_dict(h["d"]), scores, vec))
    return hits
