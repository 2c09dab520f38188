"""Which named vector each kind of search uses, over plain fakes (a fake two-vector encoder and the
fake search service): text -> "semantic", example image -> "visual" when the model has it, text +
image -> "semantic", more like this -> the stored "visual"; ingest stores every vector."""

from __future__ import annotations

import numpy as np
import pytest
from imagesearch.v1 import common_pb2, encoder_pb2, search_pb2

from services.gateway import convert
from services.gateway.domain import (
    Asset,
    ModelRef,
    RerankOptions,
    SearchQuery,
    SearchResult,
    StageScores,
    UpsertRecord,
)
from tests.gateway.fakes import MODEL, VISUAL_DIM, png, visual
from tests.gateway.test_core import ALICE, World, ids, item, run_ingest


@pytest.fixture
async def two_vector_world() -> World:
    w = World()
    w.encoder.two_vectors = True
    acks = await run_ingest(
        w, [item("cat", "cat sofa"), item("dog", "dog park"), item("car", "red car street")]
    )
    assert len(acks) == 3
    return w


async def test_ingest_stores_the_visual_vector_beside_the_primary(two_vector_world: World) -> None:
    stored = two_vector_world.search.store[("acme", "dog")]
    assert set(stored.named) == {"visual"}
    assert np.allclose(stored.named["visual"], visual("dog park"))
    assert len(stored.vector) != VISUAL_DIM  # the primary stays the semantic vector


async def test_image_only_search_uses_visual(two_vector_world: World) -> None:
    w = two_vector_world
    page = await w.gw.search(ALICE, SearchQuery(image=png("dog park")))
    spec = w.search.queries[-1]
    assert spec.vector_name == "visual" and spec.vector is not None and len(spec.vector) == VISUAL_DIM
    assert ids(page)[0] == "dog"
    top = page.results[0].scores
    assert top.vector_name == "visual" and top.image_cosine == pytest.approx(1.0, abs=1e-5)
    first_stage_only = await w.gw.search(
        ALICE, SearchQuery(image=png("dog park"), rerank=RerankOptions(disable=True))
    )
    assert first_stage_only.results[0].scores.vector_name == "visual"


async def test_text_and_text_plus_image_use_semantic(two_vector_world: World) -> None:
    w = two_vector_world
    text = await w.gw.search(ALICE, SearchQuery(text="cat"))
    assert w.search.queries[-1].vector_name == "semantic" and text.results[0].scores.vector_name == "semantic"
    both = await w.gw.search(ALICE, SearchQuery(text="red car", image=png("car street")))
    assert w.search.queries[-1].vector_name == "semantic"
    assert ids(both)[0] == "car" and both.results[0].scores.vector_name == "semantic"


async def test_keyword_only_search_names_no_vector(two_vector_world: World) -> None:
    page = await two_vector_world.gw.search(ALICE, SearchQuery(text="sofa", alpha=0.0))
    assert ids(page) and all(r.scores.vector_name == "" for r in page.results)


async def test_more_like_this_uses_the_stored_visual_vector(two_vector_world: World) -> None:
    w = two_vector_world
    page = await w.gw.search_similar(ALICE, SearchQuery(similar_to="cat"))
    spec = w.search.queries[-1]
    assert spec.vector_name == "visual" and spec.vector is not None
    assert np.allclose(spec.vector, visual("cat sofa"))
    assert "cat" not in ids(page) and all(r.scores.vector_name == "visual" for r in page.results)


async def test_a_one_vector_model_searches_its_primary() -> None:
    w = World()  # the encoder returns only the primary (no "visual")
    await run_ingest(w, [item("dog", "dog park"), item("cat", "cat sofa")])
    assert w.search.store[("acme", "dog")].named == {}
    page = await w.gw.search(ALICE, SearchQuery(image=png("dog park")))
    assert w.search.queries[-1].vector_name == "semantic" and ids(page)[0] == "dog"
    assert page.results[0].scores.vector_name == "semantic"
    await w.gw.search_similar(ALICE, SearchQuery(similar_to="cat"))
    assert w.search.queries[-1].vector_name == "semantic"


def test_convert_carries_named_vectors_both_ways() -> None:
    sem, vis = np.ones(4, np.float32) / 2, np.ones(6, np.float32) / np.sqrt(6)
    resp = encoder_pb2.EncodeImagesResponse(
        model=common_pb2.ModelRef(name=MODEL.name, version=MODEL.version),
        results=[
            encoder_pb2.EncodeResult(
                embedding=convert.embedding_pb(sem, MODEL),
                vectors=[
                    convert.embedding_pb(sem, MODEL, "semantic"),
                    convert.embedding_pb(vis, MODEL, "visual"),
                ],
            )
        ],
    )
    enc = convert.encoded_batch(resp).items[0]
    assert enc.vector is not None and np.allclose(enc.vector, sem)
    assert set(enc.named) == {"visual"} and np.allclose(enc.named["visual"], vis)
    req = convert.upsert_request("acme", [UpsertRecord(Asset(asset_id="a"), sem, MODEL, {"visual": vis})])
    rec = req.assets[0]
    assert [(v.vector_name, v.model.name) for v in rec.vectors] == [("visual", MODEL.name)]
    back = convert.stored_assets(search_pb2.GetAssetsResponse(assets=[rec]))[0]
    assert np.allclose(back.named["visual"], vis)
    result = SearchResult(asset=Asset(asset_id="a"), scores=StageScores(vector_name="visual"))
    assert convert.result_pb(result).scores.vector_name == "visual"


def test_a_read_asset_keeps_each_other_model_versions_vectors_apart() -> None:
    photo = ModelRef("photo", "1")
    sem, vis = np.ones(4, np.float32) / 2, np.ones(6, np.float32) / np.sqrt(6)
    p_sem, p_vis = -sem, -vis
    rec = search_pb2.AssetRecord(
        asset=common_pb2.Asset(asset_id="a"),
        image_embedding=convert.embedding_pb(sem, MODEL),
        vectors=[
            convert.embedding_pb(vis, MODEL, "visual"),
            convert.embedding_pb(p_sem, photo),  # another version's primary (no name)
            convert.embedding_pb(p_vis, photo, "visual"),
            convert.embedding_pb(vis, ModelRef("half", "1"), "visual"),  # no primary: not held
        ],
    )
    back = convert.stored_assets(search_pb2.GetAssetsResponse(assets=[rec]))[0]
    assert set(back.named) == {"visual"} and np.allclose(back.named["visual"], vis)
    assert set(back.others) == {photo}
    assert np.allclose(back.others[photo].vector, p_sem)
    assert set(back.others[photo].named) == {"visual"}
    assert np.allclose(back.others[photo].named["visual"], p_vis)
