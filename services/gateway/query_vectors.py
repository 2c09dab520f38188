"""Query embeddings, cached: the same text (or example image) asked again is not re-encoded.

Texts are keyed by the text, images by their content hash (query images repeat too: "more of this",
pagination). Both caches are LRU with a TTL, and both are cleared when the encoder reports another
model (a vector of the old model would not match the index any more).
"""

from __future__ import annotations

import hashlib

import structlog
from cachetools import TTLCache

from services.common.errors import InvalidArgument
from services.gateway.analysis import check_image, check_size
from services.gateway.backends.base import EncoderClient
from services.gateway.backends.errors import caller_safe
from services.gateway.domain import EncodedBatch, ModelRef, Vector

log = structlog.get_logger("search")

Embedding = tuple[Vector, ModelRef | None]
# An image's primary vector, its model, and the model's other named vectors for it (e.g. "visual").
ImageEmbedding = tuple[Vector, ModelRef | None, dict[str, Vector]]


class QueryVectors:
    def __init__(
        self, encoder: EncoderClient, entries: int, ttl_s: float, max_image_bytes: int, max_image_pixels: int
    ) -> None:
        self._encoder = encoder
        self._texts: TTLCache[str, Embedding] = TTLCache(entries, ttl_s)
        self._images: TTLCache[str, ImageEmbedding] = TTLCache(max(1, entries // 4), ttl_s)
        self._max_image_bytes = max_image_bytes
        self._max_image_pixels = max_image_pixels
        self._model: ModelRef | None = None

    async def text(self, text: str) -> Embedding:
        cached = self._texts.get(text)
        if cached is not None:
            return cached
        value = self._first(await self._encoder.encode_texts([text]), "query text")
        self._texts[text] = value
        return value

    async def image(self, image: bytes) -> ImageEmbedding:
        check_size(image, self._max_image_bytes)  # before hashing it
        key = hashlib.sha256(image).hexdigest()
        cached = self._images.get(key)
        if cached is not None:
            return cached
        check_image(image, self._max_image_bytes, self._max_image_pixels)
        batch = await self._encoder.encode_images([image])
        primary, model = self._first(batch, "query image")
        value = (primary, model, dict(batch.items[0].named))
        self._images[key] = value
        return value

    def _first(self, batch: EncodedBatch, what: str) -> Embedding:
        item = batch.items[0]
        if item.vector is None:
            raise InvalidArgument(f"{what} rejected by the encoder: {caller_safe(item.error_message)}")
        self.note_model(batch.model)
        return item.vector, batch.model

    def note_model(self, model: ModelRef | None) -> None:
        """Called with the model of every encoder answer (ingest's too): a new model clears the caches."""
        if model is not None and model != self._model:
            if self._model is not None:
                log.info("encoder model changed; query vector caches cleared", old=self._model, new=model)
                self._texts.clear()
                self._images.clear()
            self._model = model
