"""Relevance through the whole suite, on both backends (embedded, and Weaviate + Triton on the real
stack), with the default model package and the server's defaults: a query with the words of one
caption finds that asset first, a word several captions share finds all of them before anything else,
and `imagesearch eval` measures a small judgement set over the live gateway.

Gallery: the 48 committed photo images of tests/encoder/fixtures/photo_recall, ingested with their
captions through `imagesearch ingest`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from imagesearch.v1 import gateway_pb2

from services import cli
from tests.gateway.suite import Suite

pytestmark = pytest.mark.integration

SUBSET = Path(__file__).resolve().parents[1] / "encoder" / "fixtures" / "photo_recall"
API_KEY = "globex-gus"  # the suite's tenant without a licence restriction
META = [("authorization", f"Bearer {API_KEY}")]


def captions() -> dict[str, str]:
    rows = [json.loads(line) for line in (SUBSET / "manifest.jsonl").read_text().splitlines() if line]
    return {Path(r["file"]).name: r["caption"] for r in rows}


@pytest.fixture(scope="module", params=["embedded", "stack"])
def suite(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    stack = request.getfixturevalue("stack") if request.param == "stack" else None
    gallery = tmp_path_factory.mktemp("gallery")
    for name, caption in captions().items():
        shutil.copy(SUBSET / "images" / name, gallery / name)
        (gallery / name).with_suffix(".json").write_text(json.dumps({"caption": caption, "license": "MIT"}))
    env = {"IMAGESEARCH_GATEWAY_OCR_ENABLED": "false", "IMAGESEARCH_GATEWAY_SAFETY_ENABLED": "false"}
    s = Suite(request.param, stack, gateway_env=env, package="photo").start()
    try:
        assert s.gateway is not None
        assert (
            cli.main(
                ["ingest", str(gallery), "--gateway", s.gateway.address, "--api-key", API_KEY, "--quiet"]
            )
            == 0
        )
        yield s
    finally:
        s.stop()


def top(s: Suite, text: str, n: int = 10) -> list[str]:
    resp = s.gateway_stub().Search(
        gateway_pb2.SearchRequest(text=text, page_size=n), metadata=META, timeout=30
    )
    return [r.asset.asset_id for r in resp.results]


def test_the_asset_whose_caption_holds_the_words_comes_first(suite: Suite) -> None:
    misses = {}
    for name, caption in captions().items():
        first = top(suite, caption, 3)
        if not first or first[0] != name:
            misses[caption] = first
    assert not misses, misses


def test_a_shared_word_finds_every_match_before_anything_else(suite: Suite) -> None:
    # Three captions hold "cup"; min-max fusion gave the weakest match keyword 0 and buried it.
    cups = {"skimage_coffee.jpg", "tuxpaint_sports_trophy_cup.jpg", "fluent3d_1F964.jpg"}
    assert set(top(suite, "cup")[:3]) == cups


def test_scores_explain_the_fusion(suite: Suite) -> None:
    resp = suite.gateway_stub().Search(
        gateway_pb2.SearchRequest(text="shark", page_size=3), metadata=META, timeout=30
    )
    best = resp.results[0]
    assert best.asset.asset_id == "fluent3d_1F988.jpg"
    assert best.scores.keyword > 0 and best.scores.vector > 0
    assert any("keyword evidence" in note for note in best.rerank_notes)


def test_eval_command_on_a_tiny_judgement_set(suite: Suite, tmp_path: Path) -> None:
    judgements = tmp_path / "tiny.jsonl"
    rows = [
        {"id": "e1", "family": "exact_caption", "text": "shark", "relevant": {"fluent3d_1F988.jpg": 2}},
        {"id": "e2", "family": "exact_caption", "text": "a cement mixer",
         "relevant": {"tuxpaint_household_tools_cementmixer.jpg": 2}},
        {"id": "p1", "family": "paraphrase", "text": "a furry household pet with whiskers",
         "relevant": ["skimage_chelsea.jpg"]},
        {"id": "i1", "family": "near_duplicate", "image": "cat.jpg", "relevant": ["skimage_chelsea.jpg"]},
    ]  # fmt: skip
    judgements.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    shutil.copy(SUBSET / "images" / "skimage_chelsea.jpg", tmp_path / "cat.jpg")
    out = tmp_path / "report.json"
    assert suite.gateway is not None
    rc = cli.main(
        ["eval", str(judgements), "--gateway", suite.gateway.address, "--api-key", API_KEY, "--baselines",
         "--json", str(out), "--plot", str(tmp_path / "plot.png"), "--quiet"]
    )  # fmt: skip
    assert rc == 0
    report = json.loads(out.read_text())
    by = {(r["config"], r["family"]): r for r in report["results"]}
    assert {c["name"] for c in report["configs"]} == {
        "default",
        "keyword-only",
        "vector-only",
        "relative-0.75",
    }
    assert by[("default", "exact_caption")]["hit@1"] == 1.0
    assert by[("default", "near_duplicate")]["hit@1"] == 1.0
    assert by[("keyword-only", "paraphrase")]["queries"] == 1
    assert (
        0 <= by[("default", "paraphrase")]["ndcg@10"] <= 1
        and by[("default", "exact_caption")]["latency_p50_ms"] > 0
    )
    assert (tmp_path / "plot.png").stat().st_size > 0
