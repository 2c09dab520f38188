"""The Weaviate collection: its schema, object ids, and the mapping between assets and objects.

Collection schema (one collection, default name `ImagesearchAsset`):

| property            | type        | tokenization | role                                           |
|---------------------|-------------|--------------|------------------------------------------------|
| asset_id            | text        | field        | filter (exact)                                 |
| uri                 | text        | field        | filter                                         |
| caption             | text        | word         | BM25 only                                      |
| caption_exact       | text        | field        | filter on `caption` (exact / LIKE)             |
| tags                | text[]      | word         | BM25 only                                      |
| tags_exact          | text[]      | field        | filter on `tags` (exact elements)              |
| ocr_text            | text        | word         | BM25 only                                      |
| owner, source       | text        | field        | filter                                         |
| license_name        | text        | field        | filter                                         |
| license_expires_at  | date        |              | filter (range, IS_NULL)                        |
| safety_labels_json  | text        |              | stored only: [[label, score], ...]             |
| safety_label_names  | text[]      | field        | filter on `safety_labels`                      |
| safety_score        | number      |              | filter (range)                                 |
| created_at, updated_at | date     |              | filter (range)                                 |
| width, height       | int         |              | filter (range)                                 |
| content_sha256      | text        | field        | filter (duplicate lookup)                      |
| embedding_model_name, embedding_model_version | text | field | the vector's model                      |
| popularity          | number      |              | filter (range)                                 |
| analysis_state      | text        | field        | pending / analysed / failed (absent: analysed) |

Named vector `image` (the model's primary vector) and one `named_<name>` per other named vector (added
when the name is first written): self-provided (no vectorizer module), HNSW with cosine distance.
The inverted index uses BM25_K1 / BM25_B (services.search.domain), no stopword removal (the embedded
backend matches it) and indexes null state (IS_NULL filters). Text used for BM25 (word tokenization)
and for exact filters (field tokenization) are separate properties, because one Weaviate property has
one tokenization.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from weaviate.classes.config import DataType, Property, Tokenization

from services.search.domain import PRIMARY_VECTOR, AssetDoc, ModelRef, SafetyLabel

VECTOR_NAME = "image"
# Other named vectors live in Weaviate vectors `named_<name>` (e.g. `named_visual`), added to the
# collection when a name is first written, so a collection made before named vectors keeps its
# primary vector `image` unchanged and needs no migration.
_NAMED_PREFIX = "named_"


def weaviate_vector(name: str) -> str:
    """The Weaviate vector holding one of the model's named vectors."""
    return VECTOR_NAME if name == PRIMARY_VECTOR else _NAMED_PREFIX + name


# Fixed namespace for object ids: uuid5(NAMESPACE, "<tenant>/<asset_id>").
UUID_NAMESPACE = uuid.UUID("6f1c4b9e-5d0a-5f43-9a53-2f3c7e1d8b10")
# Filter field -> Weaviate property (fields not listed keep their name).


def object_uuid(tenant: str, asset_id: str) -> uuid.UUID:
    return uuid.uuid5(UUID_NAMESPACE, f"{tenant}/{asset_id}")


def _text(name: str, tokenization: Tokenization, *, searchable: bool, filterable: bool) -> Property:
    return Property(
        name=name,
        data_type=DataType.TEXT,
        tokenization=tokenization,
        index_searchable=searchable,
        index_filterable=filterable,
    )


def _text_array(name: str, tokenization: Tokenization, *, searchable: bool, filterable: bool) -> Property:
    return Property(
        name=name,
        data_type=DataType.TEXT_ARRAY,
        tokenization=tokenization,
        index_searchable=searchable,
        index_filterable=filterable,
    )


# Added to collections made before analysis states (backend `_ensure_collection`): their objects have
# no value, which every filter treats as "analysed".
ANALYSIS_STATE_PROPERTY = _text("analysis_state", Tokenization.FIELD, searchable=False, filterable=True)


def collection_properties() -> list[Property]:
    word, field = Tokenization.WORD, Tokenization.FIELD
    return [
        _text("asset_id", field, searchable=False, filterable=True),
        _text("uri", field, searchable=False, filterable=True),
        _text("caption", word, searchable=True, filterable=False),
        _text("caption_exact", field, searchable=False, filterable=True),
        _text_array("tags", word, searchable=True, filterable=False),
        _text_array("tags_exact", field, searchable=False, filterable=True),
        _text("ocr_text", word, searchable=True, filterable=False),
        _text("owner", field, searchable=False, filterable=True),
        _text("source", field, searchable=False, filterable=True),
        _text("license_name", field, searchable=False, filterable=True),
        Property(name="license_expires_at", data_type=DataType.DATE),
        Property(
            name="safety_labels_json", data_type=DataType.TEXT, index_searchable=False, index_filterable=False
        ),
        _text_array("safety_label_names", field, searchable=False, filterable=True),
        Property(name="safety_score", data_type=DataType.NUMBER),
        Property(name="created_at", data_type=DataType.DATE),
        Property(name="updated_at", data_type=DataType.DATE),
        Property(name="width", data_type=DataType.INT),
        Property(name="height", data_type=DataType.INT),
        _text("content_sha256", field, searchable=False, filterable=True),
        _text("embedding_model_name", field, searchable=False, filterable=True),
        _text("embedding_model_version", field, searchable=False, filterable=True),
        Property(name="popularity", data_type=DataType.NUMBER),
        ANALYSIS_STATE_PROPERTY,
    ]


def doc_to_properties(doc: AssetDoc) -> dict[str, Any]:
    """Properties of one object; empty values are omitted so IS_NULL sees them as null."""
    props: dict[str, Any] = {
        "asset_id": doc.asset_id,
        "safety_score": float(doc.safety_score),
        "width": int(doc.width),
        "height": int(doc.height),
        "popularity": float(doc.popularity),
    }
    for name, value in (
        ("uri", doc.uri),
        ("caption", doc.caption),
        ("caption_exact", doc.caption),
        ("ocr_text", doc.ocr_text),
        ("owner", doc.owner),
        ("source", doc.source),
        ("license_name", doc.license_name),
        ("content_sha256", doc.content_sha256),
        ("analysis_state", doc.analysis_state),
    ):
        if value:
            props[name] = value
    if doc.tags:
        props["tags"] = list(doc.tags)
        props["tags_exact"] = list(doc.tags)
    if doc.safety_labels:
        props["safety_labels_json"] = json.dumps([[s.label, s.score] for s in doc.safety_labels])
        props["safety_label_names"] = sorted({s.label for s in doc.safety_labels})
    for name, dt in (
        ("license_expires_at", doc.license_expires_at),
        ("created_at", doc.created_at),
        ("updated_at", doc.updated_at),
    ):
        if dt is not None:
            props[name] = dt
    if doc.embedding_model is not None:
        props["embedding_model_name"] = doc.embedding_model.name
        props["embedding_model_version"] = doc.embedding_model.version
    return props


def as_utc(v: Any) -> datetime | None:
    if v is None:
        return None
    if isinstance(v, str):
        v = datetime.fromisoformat(v.replace("Z", "+00:00"))
    return v.astimezone(UTC) if v.tzinfo else v.replace(tzinfo=UTC)


def properties_to_doc(p: dict[str, Any]) -> AssetDoc:
    labels = json.loads(p["safety_labels_json"]) if p.get("safety_labels_json") else []
    name, version = p.get("embedding_model_name"), p.get("embedding_model_version")
    return AssetDoc(
        asset_id=p["asset_id"],
        uri=p.get("uri") or "",
        caption=p.get("caption") or "",
        tags=tuple(p.get("tags") or ()),
        ocr_text=p.get("ocr_text") or "",
        owner=p.get("owner") or "",
        license_name=p.get("license_name") or "",
        license_expires_at=as_utc(p.get("license_expires_at")),
        safety_labels=tuple(SafetyLabel(str(lb), float(s)) for lb, s in labels),
        safety_score=float(p.get("safety_score") or 0.0),
        source=p.get("source") or "",
        created_at=as_utc(p.get("created_at")),
        updated_at=as_utc(p.get("updated_at")),
        width=int(p.get("width") or 0),
        height=int(p.get("height") or 0),
        content_sha256=p.get("content_sha256") or "",
        embedding_model=ModelRef(str(name), str(version or "")) if name else None,
        popularity=float(p.get("popularity") or 0.0),
        analysis_state=p.get("analysis_state") or "",
    )
