"""The default package's recall floor, through the encoder service, on a small committed slice of the
held-out photo/object set (tests/encoder/fixtures/photo_recall, written by tools/photo_package/ci_subset.py:
48 images of Tux Paint photo stamps, fluent-emoji-3d renders and scikit-image samples, 30 of them targets
of hand-written paraphrase queries that avoid the caption's words).

Floors are for this 48-image gallery, below the measured values by a margin (figures in
models/photo/README.md): a regression guard, not the full-set figures of the model card. A change of
default package that misses them has to say why here.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from imagesearch.v1 import encoder_pb2, encoder_pb2_grpc
from PIL import Image

from services.encoder.package import ModelPackage
from tests.service_process import ServiceProcess
from tools.photo_package.eval_set import augment

pytestmark = pytest.mark.integration

SUBSET = Path(__file__).resolve().parent / "fixtures" / "photo_recall"
# The bar: reached on this slice, not yet on the full held-out set (models/photo/README.md).
PARAPHRASE_R10_FLOOR = 0.60
# The bar for every augmentation, greyscale included (here: at most one miss in 48).
NEAR_DUPLICATE_HIT1_FLOOR = {"crop80": 0.97, "half_jpeg40": 0.97, "rot7_blur": 0.97, "grey": 0.97}
AUGMENTATIONS = tuple(NEAR_DUPLICATE_HIT1_FLOOR)


@pytest.fixture(scope="module")
def default_encoder(photo_package: ModelPackage) -> Iterator[encoder_pb2_grpc.EncoderServiceStub]:
    # No IMAGESEARCH_ENCODER_MODEL_PACKAGE: the floor is the default package's.
    with ServiceProcess("services.encoder", env={}) as svc, grpc.insecure_channel(svc.address) as channel:
        yield encoder_pb2_grpc.EncoderServiceStub(channel)


def _jpeg(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _encode_images(stub: encoder_pb2_grpc.EncoderServiceStub, data: list[bytes]) -> dict[str, np.ndarray]:
    vectors: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(data), 32):
        images = [encoder_pb2.ImageInput(id=str(i), data=d) for i, d in enumerate(data[start : start + 32])]
        response = stub.EncodeImages(encoder_pb2.EncodeImagesRequest(images=images), timeout=120)
        for result in response.results:
            assert not result.HasField("error"), result.error.message
            for v in result.vectors:
                vectors.setdefault(v.vector_name, []).append(np.frombuffer(v.values, dtype="<f4"))
    return {name: np.stack(rows) for name, rows in vectors.items()}


def test_default_package_meets_the_recall_floors(
    default_encoder: encoder_pb2_grpc.EncoderServiceStub,
) -> None:
    info = default_encoder.GetModelInfo(encoder_pb2.GetModelInfoRequest(), timeout=30)
    assert {v.name for v in info.vectors} >= {"semantic", "visual"}
    items = [json.loads(line) for line in (SUBSET / "manifest.jsonl").read_text().splitlines()]
    ids = [item["id"] for item in items]
    originals = [(SUBSET / item["file"]).read_bytes() for item in items]
    gallery = _encode_images(default_encoder, originals)

    queries = [
        line.split("\t")
        for line in (SUBSET / "queries_paraphrase.tsv").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    texts = [encoder_pb2.TextInput(id=str(i), text=q) for i, (_, q) in enumerate(queries)]
    response = default_encoder.EncodeTexts(encoder_pb2.EncodeTextsRequest(texts=texts), timeout=60)
    text_vectors = np.stack([np.frombuffer(r.embedding.values, dtype="<f4") for r in response.results])
    ranks = np.argsort(-(text_vectors @ gallery["semantic"].T), axis=1)
    hits = [ids.index(target) in ranks[i, :10] for i, (target, _) in enumerate(queries)]
    recall_at_10 = float(np.mean(hits))

    hit_at_1 = {}
    for kind in AUGMENTATIONS:
        augmented = [_jpeg(augment(Image.open(io.BytesIO(d)).convert("RGB"), kind)) for d in originals]
        visual = _encode_images(default_encoder, augmented)["visual"]
        nearest = np.argmax(visual @ gallery["visual"].T, axis=1)
        hit_at_1[kind] = float(np.mean(nearest == np.arange(len(ids))))
    print(f"paraphrase R@10 {recall_at_10:.3f} ({len(queries)} queries); near-duplicate hit@1 {hit_at_1}")
    assert recall_at_10 >= PARAPHRASE_R10_FLOOR, f"paraphrase R@10 {recall_at_10:.3f}"
    for kind, floor in NEAR_DUPLICATE_HIT1_FLOOR.items():
        assert hit_at_1[kind] >= floor, f"{kind} hit@1 {hit_at_1[kind]:.3f}"
