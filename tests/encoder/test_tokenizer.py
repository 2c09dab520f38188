"""The tokenizer gives exactly the ids of CLIP's reference tokenizer (OpenCLIP's SimpleTokenizer).

Reference ids come from tests/encoder/fixtures/clip_tokenizer_reference.json (made by
make_reference_fixtures.py with open_clip); when open_clip is importable the same comparison also runs
live on fresh random texts.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from services.encoder.package import ModelPackage
from services.encoder.tokenizer import CONTEXT_LENGTH, ClipTokenizer, WordPieceTokenizer

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "clip_tokenizer_reference.json").read_text())


@pytest.fixture(scope="module")
def tokenizer() -> ClipTokenizer:
    return ClipTokenizer()


def _padded(ids: list[int]) -> list[int]:
    return ids + [0] * (CONTEXT_LENGTH - len(ids))


def test_identical_to_reference_ids(tokenizer: ClipTokenizer) -> None:
    cases = FIXTURE["cases"]
    out = tokenizer([c["text"] for c in cases])
    assert out.ids.shape == (len(cases), CONTEXT_LENGTH) and out.ids.dtype == np.int64
    mismatches = [
        c["text"] for c, row in zip(cases, out.ids, strict=True) if row.tolist() != _padded(c["ids"])
    ]
    assert (
        not mismatches
    ), f"{len(mismatches)}/{len(cases)} texts differ from the reference, e.g. {mismatches[:3]}"


def test_fixture_covers_the_hard_cases() -> None:
    texts = [c["text"] for c in FIXTURE["cases"]]
    assert any(len(c["ids"]) == CONTEXT_LENGTH for c in FIXTURE["cases"])  # overlong, truncated
    assert any(any(ord(ch) > 0x1F000 for ch in t) for t in texts)  # emoji
    assert any("<end_of_text>" in t for t in texts)  # literal special tokens
    assert "" in texts


def test_special_tokens_and_padding(tokenizer: ClipTokenizer) -> None:
    out = tokenizer(["a photo of a cat"])
    row = out.ids[0].tolist()
    assert row[0] == 49406 and row[row.index(49407) + 1 :] == [0] * (CONTEXT_LENGTH - row.index(49407) - 1)
    assert tokenizer.vocab_size == 49408 and not out.truncated[0] and not out.empty[0]


def test_truncation_keeps_75_tokens_then_end_token(tokenizer: ClipTokenizer) -> None:
    long_text = " ".join(f"word{i}" for i in range(200))
    out = tokenizer([long_text, "short"])
    full = tokenizer.encode_ids(long_text)
    assert out.truncated == [True, False]
    assert out.ids[0].tolist() == [49406, *full[:75], 49407]


def test_exactly_full_context_is_not_truncated(tokenizer: ClipTokenizer) -> None:
    text = " ".join(["cat"] * 75)  # 75 tokens + start + end = 77
    out = tokenizer([text, text + " cat"])
    assert out.truncated == [False, True]
    assert out.ids[0, -1] == 49407 and out.ids[1, -1] == 49407


def test_whitespace_only_texts_are_flagged_empty(tokenizer: ClipTokenizer) -> None:
    # A zero-width space is not whitespace to CLIP: it is a token of its own.
    out = tokenizer(["   \t\n", "\u3000\u2003\xa0", "\u200b", "ok"])
    assert out.empty == [True, True, False, False]


def test_cleaning_matches_clip(tokenizer: ClipTokenizer) -> None:
    # ftfy repairs mojibake, HTML entities are unescaped twice, case and whitespace are normalised.
    same = tokenizer(["Don&amp;#39;t  STOP", "don't stop", "doesn\u00e2\u20ac\u2122t", "doesn\u2019t"]).ids
    assert (same[0] == same[1]).all()
    assert (same[2] == same[3]).all()


def test_live_against_open_clip_when_installed(tokenizer: ClipTokenizer) -> None:
    open_clip_tokenizer = pytest.importorskip("open_clip.tokenizer")
    rnd = random.Random(7)
    alphabet = "aZ09 \t'.,!?&;#<>_-éß日本😀\u0301\u200b" + "<end_of_text>"
    texts = ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 200))) for _ in range(300)]
    reference = open_clip_tokenizer.tokenize(texts).numpy()
    assert (tokenizer(texts).ids == reference).all()


# ---- WordPiece (the photo package's text tower) ---------------------------------------------------------


def test_wordpiece_pads_to_the_longest_text_with_a_mask_and_flags_truncation_and_empty(
    photo_package: ModelPackage,
) -> None:
    tokenizer = WordPieceTokenizer(photo_package.directory / "tokenizer.json", max_length=8)
    out = tokenizer(["A Dog", "one two three four five six seven eight", " \u200b\x00 "])
    assert out.ids.shape == out.attention_mask.shape == (3, 8)  # type: ignore[union-attr]
    assert out.ids[0, :4].tolist() == [101, 1037, 3899, 102] and not out.ids[0, 4:].any()  # lowercased
    assert out.attention_mask[0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]  # type: ignore[index]
    assert out.ids[1, 0] == 101 and out.ids[1, -1] == 102  # truncated, [SEP] kept
    assert out.truncated == [False, True, False] and out.empty == [False, False, True]
    assert sorted(out.tensors()) == ["attention_mask", "input_ids"]
