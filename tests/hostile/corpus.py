"""The hostile corpus (issue 17 item 6): data only, one `Case` per request sent to the gateway.

Each case names the RPC, the request (a message, a list of Ingest items, or raw bytes for what a
proto string cannot hold), the metadata it is sent with, the status codes that are a precise answer
for it, and, for Ingest streams, each item's expected outcome. `test_corpus.py` runs them in order
against one embedded suite. Images are generated here (deterministic, distinct bytes per good item, so
no good item is a DUPLICATE of another by accident).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import io
import json
import math
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp
from imagesearch.v1 import common_pb2, gateway_pb2
from PIL import Image

from services.common.limits import MAX_FILTER_NODES, MAX_LIST_VALUES
from services.search.convert import TIMESTAMP_MAX_SECONDS, TIMESTAMP_MIN_SECONDS
from tests.encoder.test_hostile import damaged_images
from tests.gateway.suite import TOKEN_SECRET
from tests.search.helpers import all_of, any_of, cond, negate
from tests.search.test_hostile import _field

S = grpc.StatusCode
OK, INVALID, NOT_FOUND = S.OK, S.INVALID_ARGUMENT, S.NOT_FOUND
UNAUTH, DENIED, EXHAUSTED = S.UNAUTHENTICATED, S.PERMISSION_DENIED, S.RESOURCE_EXHAUSTED
OUTCOME = gateway_pb2.IngestOutcome
CREATED, UPDATED = OUTCOME.INGEST_OUTCOME_CREATED, OUTCOME.INGEST_OUTCOME_UPDATED
UNCHANGED, DUPLICATE = OUTCOME.INGEST_OUTCOME_UNCHANGED, OUTCOME.INGEST_OUTCOME_DUPLICATE
FAILED = OUTCOME.INGEST_OUTCOME_FAILED
# ItemError codes (google.rpc.Code numbers)
C_INVALID, C_EXHAUSTED = 3, 8

Metadata = tuple[tuple[str, str], ...]
ALICE: Metadata = (("authorization", "Bearer acme-alice"),)  # acme: search, ingest, delete
READER: Metadata = (("authorization", "Bearer acme-reader"),)  # acme: search only
URSULA: Metadata = (("authorization", "Bearer acme-ursula"),)  # acme: search, unsafe-content
GUS: Metadata = (("authorization", "Bearer globex-gus"),)  # globex: admin
GOOD_LICENSE = "MIT"  # in acme's allowed set
SECRET_ID = "globex-secret"  # stored in globex by the fixture; acme must never see it


@dataclass(frozen=True)
class Item:
    """An Ingest item's expected acknowledgement. `codes`: acceptable ItemError codes when FAILED."""

    asset_id: str
    outcome: int
    codes: tuple[int, ...] = ()


@dataclass
class Case:
    id: str
    family: str  # images, texts, numbers, filters, auth, streams
    rpc: str  # Search, SearchSimilar, GetAsset, DeleteAsset, Ingest; "raw:<Method>" sends bytes
    request: Any
    codes: tuple[grpc.StatusCode, ...] = (OK,)
    items: tuple[Item, ...] = ()  # Ingest: every item's expected outcome (compared as a multiset)
    md: Metadata = ALICE
    check: Callable[[Any], None] | None = None  # extra assertion on an OK response
    xfail: str = ""  # "issue 17: <finding>" for a case that shows a defect (strict xfail)
    max_s: float = 30.0  # the answer must come within this (a hostile input must not stall a call)


# An exception class name, a traceback, or a library's name in a message the caller reads. (Protobuf is
# not on the list: it is the contract's own wire format, which the caller speaks.)
CLASS_NAME = re.compile(r"[A-Z][a-z]+(Error|Exception)|Traceback|<class ")
LIBRARY = re.compile(
    r"\b(Pillow|PIL|grpc|grpcio|weaviate|tantivy|usearch|sqlite3?|numpy|onnxruntime|structlog|redis|"
    r"cachetools|nudenet|rapidocr)\b",
    re.IGNORECASE,
)


def assert_no_leak(message: str, where: str) -> None:
    hit = CLASS_NAME.search(message) or LIBRARY.search(message)
    assert hit is None, f"{where}: message names {hit.group(0)!r}: {message!r}"


CASES: list[Case] = []
# Cases run after the integrity checks, each followed by a wait until the suite serves again: they
# may leave a service busy for seconds (a finding).
LAST_CASES: list[Case] = []


def add(case: Case) -> None:
    CASES.append(case)


# ---- builders --------------------------------------------------------------------------------------


def _noise(seed: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    rng = np.random.default_rng(1000 + seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _save(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


_seed = iter(range(1, 10_000))


def picture(fmt: str = "PNG") -> bytes:
    """A small valid image with bytes no other call returns."""
    return _save(_noise(next(_seed)), fmt)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int, bit_depth: int = 8, color: int = 2, idat: bytes = b"") -> bytes:
    """A PNG whose (valid, CRC-checked) header declares these dimensions."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat or zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def png_bomb(side: int) -> bytes:
    """A real decompression bomb: a 1-bit side x side PNG of zeros, a few KB compressed."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    return png_declaring(side, side, bit_depth=1, color=0, idat=data)


def jpeg_declaring(width: int, height: int) -> bytes:
    data = bytearray(_save(_noise(0, (16, 16)), "JPEG"))
    i = 2
    while i < len(data):  # walk the segments to the frame header (SOF0..SOF2)
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            data[i + 5 : i + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        i += 2 + length
    raise AssertionError("no SOF segment")


def gif_declaring(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + b"\x3b"


def webp_declaring(width: int, height: int) -> bytes:
    data = bytearray(_save(_noise(0, (16, 16)), "WEBP", lossless=False))
    assert data[12:16] == b"VP8 ", data[12:16]
    data[26:28] = struct.pack("<H", width & 0x3FFF)
    data[28:30] = struct.pack("<H", height & 0x3FFF)
    return bytes(data)


def animated(fmt: str) -> bytes:
    frames = [_noise(next(_seed), (48, 48)) for _ in range(4)]
    kw: dict[str, Any] = {"save_all": True, "append_images": frames[1:], "duration": 80, "loop": 0}
    return _save(frames[0], fmt, **kw)


def cmyk_jpeg() -> bytes:
    return _save(_noise(next(_seed)).convert("CMYK"), "JPEG")


def png16(color: bool) -> bytes:
    rng = np.random.default_rng(next(_seed))
    if color:  # 16 bits per channel RGB, written by hand (Pillow cannot save it)
        px = rng.integers(0, 65536, (24, 32, 3), dtype=np.uint16).astype(">u2")
        raw = b"".join(b"\x00" + row.tobytes() for row in px)
        return png_declaring(32, 24, bit_depth=16, color=2, idat=zlib.compress(raw))
    return _save(Image.fromarray(rng.integers(0, 65536, (24, 32), dtype=np.uint16)), "PNG")


def palette_transparent() -> bytes:
    img = _noise(next(_seed)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return _save(img, "PNG", transparency=0)


def mode_image(mode: str, fmt: str = "PNG", size: tuple[int, int] = (64, 48)) -> bytes:
    return _save(_noise(next(_seed), size).convert(mode), fmt)


def ingest(asset_id: str, image: bytes | None = None, **kw: Any) -> gateway_pb2.IngestRequest:
    kw.setdefault("license", common_pb2.License(name=GOOD_LICENSE))
    kw.setdefault("caption", f"hostile corpus item {asset_id}")
    return gateway_pb2.IngestRequest(asset_id=asset_id, image=picture() if image is None else image, **kw)


def search(text: str = "seed", **kw: Any) -> gateway_pb2.SearchRequest:
    return gateway_pb2.SearchRequest(text=text, **kw)


def ts(seconds: int, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=nanos)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwt(claims: Any, header: Any = None, secret: str = TOKEN_SECRET, signature: str | None = None) -> str:
    """A compact JWS built by hand (so malformed and unsigned ones can be built too)."""
    h = _b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    p = _b64(json.dumps(claims).encode() if not isinstance(claims, bytes) else claims)
    if signature is None:
        signature = _b64(hmac.new(secret.encode(), f"{h}.{p}".encode(), hashlib.sha256).digest())
    return f"{h}.{p}.{signature}"


def claims(**over: Any) -> dict[str, Any]:
    now = int(dt.datetime.now(dt.UTC).timestamp())
    base = {"sub": "tok", "tenant": "acme", "roles": ["search"], "aud": "imagesearch", "exp": now + 3600}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def bearer(credential: str) -> Metadata:
    return (("authorization", f"Bearer {credential}"),)


def raw_search(**fields: bytes) -> bytes:
    """SearchRequest bytes: text (field 1), filter (3) given as already-encoded payloads."""
    numbers = {"text": 1, "filter": 3, "page_token": 5}
    return b"".join(_field(numbers[k], v) for k, v in fields.items())


def nested_filter_bytes(depth: int) -> bytes:
    f = common_pb2.Filter(
        condition=common_pb2.Condition(field="owner", operator=1, value=common_pb2.Value(string_value="a"))
    ).SerializeToString()
    for _ in range(depth):
        f = _field(4, f)
    return f


def op_cond(fieldname: str, operator: int, value: common_pb2.Value | None = None) -> common_pb2.Filter:
    c = common_pb2.Condition(field=fieldname, operator=operator)  # type: ignore[arg-type]
    if value is not None:
        c.value.CopyFrom(value)
    return common_pb2.Filter(condition=c)


def deep(depth: int) -> common_pb2.Filter:
    f = cond("owner", "eq", "a")
    for _ in range(depth):
        f = negate(f)
    return f


def no_results(resp: Any) -> None:
    assert list(resp.results) == [], [r.asset.asset_id for r in resp.results]


def finite_scores(resp: Any) -> None:
    assert resp.results
    for r in resp.results:
        s = r.scores
        values = (s.keyword, s.vector, s.fused, s.text_cosine, s.rerank, s.boost, s.final)
        assert all(math.isfinite(v) for v in values), (r.asset.asset_id, s)


def without(asset_id: str) -> Callable[[Any], None]:
    def check(resp: Any) -> None:
        assert asset_id not in [r.asset.asset_id for r in resp.results], "another tenant's asset was returned"

    return check


def same_id(asset_id: str) -> Callable[[Any], None]:
    def check(resp: Any) -> None:
        assert resp.asset.asset_id == asset_id, (resp.asset.asset_id, asset_id)

    return check


# What the fixture stores before the corpus runs: acme's seeds (a normal search must still find them
# afterwards) and globex's secret.
SEEDS = [
    ingest(f"seed-{i}", _save(_noise(-1 - i), "PNG"), caption=f"seed picture number {i}", tags=["seed"])
    for i in range(4)
]
SECRET = ingest(SECRET_ID, _save(_noise(-99), "PNG"), caption="zephyrine blueprint")


# ---- images ----------------------------------------------------------------------------------------

BAD_IMAGES: list[tuple[str, bytes, tuple[grpc.StatusCode, ...]]] = [
    *((name, data, (INVALID,)) for name, data in damaged_images()),
    ("empty", b"", (INVALID,)),
    ("one-byte", b"\x89", (INVALID,)),
    ("text", b"hello, I am not an image", (INVALID,)),
    ("svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>', (INVALID,)),
    ("svg-xml-decl", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', (INVALID,)),
    ("html", b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>", (INVALID,)),
    ("pdf", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", (INVALID,)),
    ("zip", b"PK\x03\x04" + b"\x00" * 60, (INVALID,)),
    ("elf", b"\x7fELF\x02\x01\x01" + b"\x00" * 57, (INVALID,)),
    ("eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", (INVALID,)),
    ("ppm-unsupported-format", _save(_noise(0, (8, 8)), "PPM"), (INVALID,)),
    ("ico-unsupported-format", _save(_noise(0, (16, 16)), "ICO"), (INVALID,)),
    ("png-magic-jpeg-body", b"\x89PNG\r\n\x1a\n" + _save(_noise(0), "JPEG")[2:], (INVALID,)),
    ("jpeg-magic-png-body", b"\xff\xd8\xff" + _save(_noise(0), "PNG")[8:], (INVALID,)),
    ("webp-truncated", _save(_noise(0), "WEBP")[:40], (INVALID,)),
    ("webp-half", (lambda d: d[: len(d) // 2])(_save(_noise(0, (128, 96)), "WEBP")), (INVALID,)),
    ("gif-half", (lambda d: d[: len(d) // 2])(_save(_noise(0, (128, 96)), "GIF")), (INVALID,)),
    ("png-zero-size", png_declaring(0, 0), (INVALID,)),
    # Declared sizes beyond the 40,000,000-pixel cap: refused from the header, before any decode.
    ("png-declares-100000x100000", png_declaring(100_000, 100_000), (EXHAUSTED, INVALID)),
    ("png-declares-2^31-1-wide", png_declaring(2**31 - 1, 1), (EXHAUSTED, INVALID)),
    ("jpeg-declares-65000x65000", jpeg_declaring(65_000, 65_000), (EXHAUSTED, INVALID)),
    ("gif-declares-65535x65535", gif_declaring(65_535, 65_535), (EXHAUSTED, INVALID)),
    ("webp-declares-16383x16383", webp_declaring(16_383, 16_383), (EXHAUSTED, INVALID)),
    ("png-bomb-7000x7000", png_bomb(7_000), (EXHAUSTED, INVALID)),
    ("png-bomb-20000x20000", png_bomb(20_000), (EXHAUSTED, INVALID)),
    ("over-byte-cap", b"\xff\xd8\xff\xe0" + b"\x00" * (20 * 1024 * 1024 + 1), (EXHAUSTED, INVALID)),
]

GOOD_IMAGES: list[tuple[str, Callable[[], bytes]]] = [
    ("strip-1x4000", lambda: _save(_noise(next(_seed), (1, 4000)), "PNG")),
    ("strip-4000x1", lambda: _save(_noise(next(_seed), (4000, 1)), "PNG")),
    ("strip-3x4000-jpeg", lambda: _save(_noise(next(_seed), (3, 4000)), "JPEG")),
    ("one-pixel", lambda: _save(_noise(next(_seed), (1, 1)), "PNG")),
    ("animated-gif", lambda: animated("GIF")),
    ("animated-webp", lambda: animated("WEBP")),
    ("cmyk-jpeg", cmyk_jpeg),
    ("png-16bit-gray", lambda: png16(False)),
    ("png-16bit-rgb", lambda: png16(True)),
    ("palette-transparency", palette_transparent),
    ("rgba-png", lambda: mode_image("RGBA")),
    ("la-png", lambda: mode_image("LA")),
    ("bilevel-png", lambda: mode_image("1")),
    ("grayscale-jpeg", lambda: mode_image("L", "JPEG")),
    ("rgba-webp", lambda: mode_image("RGBA", "WEBP")),
    ("bmp", lambda: mode_image("RGB", "BMP")),
    ("tiff", lambda: mode_image("RGB", "TIFF")),
    ("cmyk-tiff", lambda: mode_image("CMYK", "TIFF")),
]

for _name, _data, _codes in BAD_IMAGES:
    add(
        Case(
            f"ingest-{_name}",
            "images",
            "Ingest",
            [ingest(f"img-{_name}", _data)],
            items=(Item(f"img-{_name}", FAILED, tuple(int(c.value[0]) for c in _codes)),),
        )
    )
    add(Case(f"search-{_name}", "images", "Search", gateway_pb2.SearchRequest(image=_data), codes=_codes))

for _name, _make in GOOD_IMAGES:
    add(
        Case(
            f"ingest-{_name}",
            "images",
            "Ingest",
            [ingest(f"img-{_name}", _make())],
            items=(Item(f"img-{_name}", CREATED),),
        )
    )
    add(Case(f"search-{_name}", "images", "Search", gateway_pb2.SearchRequest(image=_make())))


# ---- texts -----------------------------------------------------------------------------------------

BAD_TEXTS = {
    "empty": "",
    "spaces": "   ",
    "tabs-newlines": "\t\n\r\n",
    "ideographic-space": "\u3000\u3000",
    "1001-chars": "x" * 1001,
    "10k-chars": "red car " * 1250,
    "10k-one-token": "y" * 10_000,
}
GOOD_TEXTS = {
    "1000-chars": "z" * 1000,
    "bom": "\ufeffred",
    "rtl-arabic": "مرحبا بالعالم",
    "rtl-hebrew": "שלום עולם",
    "rtl-override": "\u202eyppah\u202c car",
    "nul-inside": "red\x00car",
    "control-chars": "\x07\x08\x1b[31mred\x1b[0m\x7f",
    "emoji": "🚗🔴",
    "emoji-zwj-family": "👨\u200d👩\u200d👧\u200d👦",
    "combining-marks": "e" + "\u0301" * 500,
    "mixed-scripts": "red 車 سيارة машина",
    "private-use": "\ue000\uf8ff",
    "noncharacter": "\ufffe\uffff",
    "astral": "\U0001d57d\U0001d58a\U0001d589 \U00013080",
    "query-syntax-field": "caption:red AND (",
    "query-syntax-quote": '"unterminated',
    "query-syntax-star": "*",
    "query-syntax-question": "?",
    "query-syntax-ops": "a OR OR AND NOT b",
    "query-syntax-minus": "-",
    "query-syntax-plus": "+",
    "query-syntax-fuzzy": "red~2 car^3",
    "query-syntax-range": "[a TO",
    "query-syntax-braces": "{}()[]",
    "query-syntax-backslash": "\\",
    "query-syntax-colon": ":",
    "sql-ish": "' OR 1=1; DROP TABLE assets; --",
    "graphql-ish": "{ Get { ImagesearchAsset { caption } } }",
    "format-string": "%s%s%n{0}{tenant}",
    "many-words": " ".join(f"w{i}" for i in range(300))[:1000],
}
# Nothing but characters the encoder's Unicode cleanup removes: "empty" (INVALID_ARGUMENT) and a
# keyword-only search are both precise answers.
CLEANED_AWAY = {
    "zero-width-space": "\u200b",
    "zero-width-joiner-only": "\u200d\u200c\u2060",
    "nul": "\x00",
    "nuls-and-bells": "\x00\x07\x1b",
}
for _name, _text in CLEANED_AWAY.items():
    add(Case(f"search-text-{_name}", "texts", "Search", search(_text), codes=(OK, INVALID)))
for _name, _text in BAD_TEXTS.items():
    add(Case(f"search-text-{_name}", "texts", "Search", search(_text), codes=(INVALID,)))
for _name, _text in GOOD_TEXTS.items():
    add(Case(f"search-text-{_name}", "texts", "Search", search(_text)))

# Invalid UTF-8 cannot be a proto string: sent as raw bytes, the request cannot be decoded.
add(
    Case(
        "raw-search-text-invalid-utf8",
        "texts",
        "raw:Search",
        raw_search(text=b"\xff\xfe car"),
        codes=(INVALID,),
    )
)
add(
    Case(
        "raw-search-text-lone-surrogate",
        "texts",
        "raw:Search",
        raw_search(text=b"\xed\xa0\x80"),
        codes=(INVALID,),
    )
)
add(
    Case(
        "raw-search-text-overlong-nul", "texts", "raw:Search", raw_search(text=b"\xc0\x80"), codes=(INVALID,)
    )
)
add(
    Case(
        "raw-search-page-token-invalid-utf8",
        "texts",
        "raw:Search",
        raw_search(text=b"red", page_token=b"\x80"),
        codes=(INVALID,),
    )
)
add(
    Case(
        "raw-search-truncated",
        "texts",
        "raw:Search",
        search("red car").SerializeToString()[:-2],
        codes=(INVALID,),
    )
)
add(Case("raw-getasset-id-invalid-utf8", "texts", "raw:GetAsset", _field(1, b"seed-\xff"), codes=(INVALID,)))
add(Case("raw-deleteasset-id-invalid-utf8", "texts", "raw:DeleteAsset", _field(1, b"\xfe"), codes=(INVALID,)))

# Text in stored metadata and ids: stored as given (the contract caps only the id's length).
TEXT_ITEMS = {
    "txt-caption-rtl": dict(caption="صورة سيارة حمراء"),
    "txt-caption-control": dict(caption="red\x00car\x1b[0m\x07"),
    "txt-caption-10k": dict(caption="long caption " * 800),
    "txt-tags-odd": dict(tags=["", " ", "\u200b", "tag\x00", "🚗", "a" * 500]),
    "txt-tags-2000": dict(tags=[f"t{i}" for i in range(2000)]),
    "txt-owner-source-uri": dict(owner="\u202eeno", source="\x00", uri="javascript:alert(1)"),
}
for _id, _fields in TEXT_ITEMS.items():
    add(Case(f"ingest-{_id}", "texts", "Ingest", [ingest(_id, **_fields)], items=(Item(_id, CREATED),)))
ODD_IDS = {
    "id-256-chars": "i" * 256,
    "id-unicode": "資產-ä-🚗",
    "id-path-traversal": "../../etc/passwd",
    "id-slashes": "a/b\\c",
    "id-nul": "a\x00b",
    "id-space": " ",
    "id-sql": "x'; DROP TABLE assets; --",
    "id-rtl": "\u202eabc",
    "id-256-emoji": "🚗" * 256,  # 256 characters, 1024 UTF-8 bytes
    "id-combining-only": "\u0301\u0301",
}
for _name, _id in ODD_IDS.items():
    add(Case(f"ingest-{_name}", "texts", "Ingest", [ingest(_id)], items=(Item(_id, CREATED),)))
    add(
        Case(
            f"get-{_name}", "texts", "GetAsset", gateway_pb2.GetAssetRequest(asset_id=_id), check=same_id(_id)
        )
    )
add(
    Case(
        "ingest-id-257-chars",
        "texts",
        "Ingest",
        [ingest("j" * 257)],
        items=(Item("j" * 257, FAILED, (C_INVALID,)),),
    )
)
add(
    Case(
        "ingest-id-257-emoji",
        "texts",
        "Ingest",
        [ingest("🚙" * 257)],
        items=(Item("🚙" * 257, FAILED, (C_INVALID,)),),
    )
)
add(Case("ingest-id-empty", "texts", "Ingest", [ingest("")], items=(Item("", FAILED, (C_INVALID,)),)))
add(Case("get-id-empty", "texts", "GetAsset", gateway_pb2.GetAssetRequest(asset_id=""), codes=(INVALID,)))
add(
    Case(
        "get-id-257-chars",
        "texts",
        "GetAsset",
        gateway_pb2.GetAssetRequest(asset_id="k" * 257),
        codes=(INVALID,),
    )
)
add(
    Case(
        "get-id-absent",
        "texts",
        "GetAsset",
        gateway_pb2.GetAssetRequest(asset_id="never-stored"),
        codes=(NOT_FOUND,),
    )
)
add(
    Case(
        "similar-id-empty",
        "texts",
        "SearchSimilar",
        gateway_pb2.SearchSimilarRequest(asset_id=""),
        codes=(INVALID,),
    )
)
add(
    Case(
        "similar-id-absent",
        "texts",
        "SearchSimilar",
        gateway_pb2.SearchSimilarRequest(asset_id="never-stored"),
        codes=(NOT_FOUND,),
    )
)
add(
    Case(
        "delete-id-absent",
        "texts",
        "DeleteAsset",
        gateway_pb2.DeleteAssetRequest(asset_id="never-stored"),
        codes=(NOT_FOUND,),
    )
)
add(
    Case(
        "delete-id-empty",
        "texts",
        "DeleteAsset",
        gateway_pb2.DeleteAssetRequest(asset_id=""),
        codes=(INVALID,),
    )
)


# ---- numbers ---------------------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")
for _n in (101, -1, 2**31 - 1, -(2**31), 1000):
    add(Case(f"search-page-size-{_n}", "numbers", "Search", search(page_size=_n), codes=(INVALID,)))
    add(
        Case(
            f"similar-page-size-{_n}",
            "numbers",
            "SearchSimilar",
            gateway_pb2.SearchSimilarRequest(asset_id="seed-0", page_size=_n),
            codes=(INVALID,),
        )
    )
for _n in (0, 1, 100):
    add(Case(f"search-page-size-{_n}", "numbers", "Search", search(page_size=_n)))
for _name, _a in {"nan": NAN, "inf": INF, "-inf": -INF, "-0.1": -0.1, "1.1": 1.1, "huge": 3e38}.items():
    add(Case(f"search-alpha-{_name}", "numbers", "Search", search(alpha=_a), codes=(INVALID,)))
for _name, _a in {"0": 0.0, "1": 1.0, "-0.0": -0.0, "denormal": 1e-45}.items():
    add(Case(f"search-alpha-{_name}", "numbers", "Search", search(alpha=_a)))
RERANK_BAD: dict[str, dict[str, Any]] = {
    "window-0": {"candidate_window": 0},
    "window--1": {"candidate_window": -1},
    "window-1001": {"candidate_window": 1001},
    "window-int-max": {"candidate_window": 2**31 - 1},
    "text-weight-nan": {"text_weight": NAN},
    "text-weight-1.5": {"text_weight": 1.5},
    "mmr-lambda--0.5": {"mmr_lambda": -0.5},
    "mmr-lambda-inf": {"mmr_lambda": INF},
    "duplicate-threshold--1": {"duplicate_threshold": -1.0},
    "freshness-weight--inf": {"freshness_weight": -INF},
    "popularity-weight-nan": {"popularity_weight": NAN},
    "popularity-weight-2": {"popularity_weight": 2.0},
}
for _name, _r in RERANK_BAD.items():
    add(
        Case(
            f"search-rerank-{_name}",
            "numbers",
            "Search",
            search(rerank=gateway_pb2.RerankOptions(**_r)),
            codes=(INVALID,),
        )
    )
for _name, _r in {
    "window-1": {"candidate_window": 1},
    "window-1000": {"candidate_window": 1000},
    "all-weights-1": {
        "text_weight": 1,
        "mmr_lambda": 1,
        "duplicate_threshold": 1,
        "freshness_weight": 1,
        "popularity_weight": 1,
    },
    "all-weights-0": {
        "text_weight": 0,
        "mmr_lambda": 0,
        "duplicate_threshold": 0,
        "freshness_weight": 0,
        "popularity_weight": 0,
    },
    "disabled": {"disable": True, "candidate_window": 5},
}.items():
    add(Case(f"search-rerank-{_name}", "numbers", "Search", search(rerank=gateway_pb2.RerankOptions(**_r))))
for _name, _tok in {
    "garbage": "garbage",
    "10k": "a" * 10_000,
    "percent": "%%%",
    "dots": "a.b.c",
    "base64-json": _b64(b'{"offset": -5}'),
}.items():
    add(Case(f"search-page-token-{_name}", "numbers", "Search", search(page_token=_tok), codes=(INVALID,)))

for _name, _p in {"nan": NAN, "inf": INF, "-inf": -INF, "negative": -1.0, "tiny-negative": -1e-300}.items():
    _id = f"num-popularity-{_name}"
    add(
        Case(
            f"ingest-popularity-{_name}",
            "numbers",
            "Ingest",
            [ingest(_id, popularity=_p)],
            items=(Item(_id, FAILED, (C_INVALID,)),),
        )
    )
for _name, _p in {
    "zero": 0.0,
    "minus-zero": -0.0,
    "max-double": 1.7976931348623157e308,
    "denormal": 5e-324,
}.items():
    _id = f"num-popularity-{_name}"
    add(
        Case(
            f"ingest-popularity-{_name}",
            "numbers",
            "Ingest",
            [ingest(_id, popularity=_p)],
            items=(Item(_id, CREATED),),
        )
    )
EXPIRIES_BAD = {
    "after-9999": ts(TIMESTAMP_MAX_SECONDS + 1),
    "before-year-1": ts(TIMESTAMP_MIN_SECONDS - 1),
    "int64-max": ts(2**63 - 1),
    "int64-min": ts(-(2**63)),
    "nanos-1e9": ts(0, 1_000_000_000),
    "nanos-negative": ts(0, -1),
}
# A boost over the largest stored popularity (1.8e308) keeps every score a number.
add(
    Case(
        "search-popularity-boost-after-max-double",
        "numbers",
        "Search",
        search(
            "hostile corpus item",
            page_size=100,
            rerank=gateway_pb2.RerankOptions(popularity_weight=1.0, duplicate_threshold=1.0),
        ),
        check=finite_scores,
    )
)
for _name, _t in EXPIRIES_BAD.items():
    _id = f"num-expiry-{_name}"
    add(
        Case(
            f"ingest-expiry-{_name}",
            "numbers",
            "Ingest",
            [ingest(_id, license=common_pb2.License(name=GOOD_LICENSE, expires_at=_t))],
            items=(Item(_id, FAILED, (C_INVALID,)),),
        )
    )
for _name, _t in {
    "last-instant": ts(TIMESTAMP_MAX_SECONDS, 999_999_999),
    "epoch": ts(0),
    "past": ts(1_000_000_000),
}.items():
    _id = f"num-expiry-{_name}"
    add(
        Case(
            f"ingest-expiry-{_name}",
            "numbers",
            "Ingest",
            [ingest(_id, license=common_pb2.License(name=GOOD_LICENSE, expires_at=_t))],
            items=(Item(_id, CREATED),),
        )
    )
for _name, _lic in {
    "no-license": None,
    "empty-name": common_pb2.License(name=""),
    "blank-name": common_pb2.License(name=" \t"),
}.items():
    _id = f"num-{_name}"
    _req = gateway_pb2.IngestRequest(asset_id=_id, image=picture(), caption="x")
    if _lic is not None:
        _req.license.CopyFrom(_lic)
    add(Case(f"ingest-{_name}", "numbers", "Ingest", [_req], items=(Item(_id, FAILED, (C_INVALID,)),)))


# ---- filters ---------------------------------------------------------------------------------------


def fsearch(f: common_pb2.Filter) -> gateway_pb2.SearchRequest:
    return search("seed", filter=f)


BAD_FILTERS: dict[str, common_pb2.Filter] = {
    "empty-node": common_pb2.Filter(),
    "all-of-empty": common_pb2.Filter(all_of=common_pb2.FilterList()),
    "any-of-empty": common_pb2.Filter(any_of=common_pb2.FilterList()),
    "negate-empty": negate(common_pb2.Filter()),
    "empty-member": all_of(cond("owner", "eq", "a"), common_pb2.Filter()),
    "no-field": cond("", "eq", "a"),
    "operator-unset": op_cond("owner", 0, common_pb2.Value(string_value="a")),
    "operator-99": op_cond("owner", 99, common_pb2.Value(string_value="a")),
    "operator-12": op_cond("owner", 12, common_pb2.Value(string_value="a")),
    "operator--1": op_cond("owner", -1, common_pb2.Value(string_value="a")),
    "operator-int32-max": op_cond("owner", 2**31 - 1, common_pb2.Value(string_value="a")),
    "no-operand": op_cond("owner", 1),
    "empty-value": op_cond("owner", 1, common_pb2.Value()),
    "empty-values": common_pb2.Filter(
        condition=common_pb2.Condition(field="owner", operator=7, values=common_pb2.ValueList())
    ),
    "unknown-field": cond("no_such_field", "eq", "a"),
    "field-tenant": cond("tenant", "eq", "globex"),
    "field-vector": cond("vector", "eq", "a"),
    "field-proto": cond("__proto__", "eq", "a"),
    "field-injection": cond("caption OR 1=1", "eq", "a"),
    "field-case": cond("Caption", "eq", "a"),
    "type-width-string": cond("width", "eq", "wide"),
    "type-caption-int": cond("caption", "eq", 5),
    "type-created-string": cond("created_at", "eq", "yesterday"),
    "type-safety-bool": cond("safety_score", "eq", True),
    "type-popularity-string": cond("popularity", "gt", "hot"),
    "type-tags-ints": cond("tags", "any", [1, 2]),
    "type-width-in-strings": cond("width", "in", ["a"]),
    "type-mixed-list": cond("owner", "in", ["a", 1]),
    "is-null-string": cond("owner", "null", "yes"),
    "gt-on-string": cond("caption", "gt", "a"),
    "contains-on-scalar": cond("width", "any", [1]),
    "like-on-int": cond("width", "like", 5),
    "in-with-single-value": cond("owner", "in", "a"),
    "eq-with-list": cond("owner", "eq", ["a", "b"]),
    "in-1025-values": cond("owner", "in", [f"u{i}" for i in range(MAX_LIST_VALUES + 1)]),
    "in-100k-values": cond("owner", "in", [f"u{i}" for i in range(100_000)]),
    "lists-over-8192-values": all_of(
        *(cond("owner", "in", [f"u{k}-{i}" for i in range(MAX_LIST_VALUES)]) for k in range(9))
    ),
    "nodes-over-cap-with-policy": all_of(
        *(cond("owner", "eq", f"u{i}") for i in range(MAX_FILTER_NODES - 2))
    ),
    "nodes-100k": all_of(*(cond("owner", "eq", f"u{i}") for i in range(100_000))),
    "depth-17": deep(17),
    "depth-90": deep(90),
    "timestamp-after-9999": op_cond(
        "created_at", 3, common_pb2.Value(timestamp_value=ts(TIMESTAMP_MAX_SECONDS + 1))
    ),
    "timestamp-int64-min": op_cond("license_expires_at", 5, common_pb2.Value(timestamp_value=ts(-(2**63)))),
    "timestamp-nanos-1e9": op_cond("updated_at", 3, common_pb2.Value(timestamp_value=ts(5, 10**9))),
    "timestamp-nanos-negative": op_cond("created_at", 3, common_pb2.Value(timestamp_value=ts(5, -1))),
    "nested-bad-timestamp": any_of(
        cond("owner", "eq", "a"),
        negate(op_cond("created_at", 3, common_pb2.Value(timestamp_value=ts(2**62)))),
    ),
}
GOOD_FILTERS: dict[str, common_pb2.Filter] = {
    "in-1024-values": cond("owner", "in", [f"u{i}" for i in range(MAX_LIST_VALUES)]),
    "depth-16": deep(16),
    "20-nodes": any_of(*(cond("owner", "eq", f"u{i}") for i in range(20))),
    "like-stars": cond("caption", "like", "***"),
    "like-question": cond("caption", "like", "?"),
    "like-sql-wildcards": cond("caption", "like", "%_%"),
    "like-regex-chars": cond("caption", "like", "[a-z]+(.*)\\"),
    "like-long": cond("caption", "like", "*" + "ab" * 100 + "*"),
    "string-nul": cond("owner", "eq", "a\x00b"),
    "string-injection": cond("asset_id", "in", ["' OR 1=1 --", '"; DROP', "${jndi:ldap://x}"]),
    "int64-max": cond("width", "gt", 2**63 - 1),
    "int64-min": cond("height", "lt", -(2**63)),
    "double-max": cond("safety_score", "lte", 1.7976931348623157e308),
    "timestamp-extremes": all_of(
        op_cond("created_at", 4, common_pb2.Value(timestamp_value=ts(TIMESTAMP_MIN_SECONDS))),
        op_cond("created_at", 6, common_pb2.Value(timestamp_value=ts(TIMESTAMP_MAX_SECONDS, 999_999_999))),
    ),
    "is-null-true": cond("owner", "null", True),
    "contains-all-tags": cond("tags", "all", ["a", "b"]),
    "not-not": negate(negate(cond("owner", "ne", "x"))),
}
for _name, _f in BAD_FILTERS.items():
    add(Case(f"filter-{_name}", "filters", "Search", fsearch(_f), codes=(INVALID,)))
for _name, _f in GOOD_FILTERS.items():
    add(Case(f"filter-{_name}", "filters", "Search", fsearch(_f)))
# Non-finite operands are refused (NaN compares false with everything; the search service says so).
add(Case("filter-double-nan", "filters", "Search", fsearch(cond("popularity", "gt", NAN)), codes=(INVALID,)))
add(Case("filter-double-inf", "filters", "Search", fsearch(cond("popularity", "lt", INF)), codes=(INVALID,)))
add(
    Case(
        "filter-double-nan-in-list",
        "filters",
        "Search",
        fsearch(cond("safety_score", "in", [0.5, NAN])),
        codes=(INVALID,),
    )
)
add(
    Case(
        "similar-filter-empty-node",
        "filters",
        "SearchSimilar",
        gateway_pb2.SearchSimilarRequest(asset_id="seed-0", filter=common_pb2.Filter()),
        codes=(INVALID,),
    )
)
add(
    Case(
        "similar-filter-unknown-field",
        "filters",
        "SearchSimilar",
        gateway_pb2.SearchSimilarRequest(asset_id="seed-0", filter=cond("nope", "eq", 1)),
        codes=(INVALID,),
    )
)
add(
    Case(
        "raw-filter-150-deep",
        "filters",
        "raw:Search",
        raw_search(text=b"seed", filter=nested_filter_bytes(150)),
        codes=(INVALID,),
    )
)
add(
    Case(
        "raw-filter-1000-deep",
        "filters",
        "raw:Search",
        raw_search(text=b"seed", filter=nested_filter_bytes(1000)),
        codes=(INVALID,),
    )
)
add(
    Case(
        "raw-filter-bad-wire-type",
        "filters",
        "raw:Search",
        raw_search(text=b"seed") + b"\x1f\x00",
        codes=(INVALID,),
    )
)


# ---- auth ------------------------------------------------------------------------------------------

_now = int(dt.datetime.now(dt.UTC).timestamp())
BAD_CREDENTIALS: dict[str, Metadata] = {
    "no-metadata": (),
    "empty-authorization": (("authorization", ""),),
    "no-scheme": (("authorization", "acme-alice"),),
    "basic-scheme": (("authorization", "Basic YWNtZS1hbGljZTpwdw=="),),
    "bearer-only": (("authorization", "Bearer"),),
    "bearer-space": (("authorization", "Bearer "),),
    "unknown-key": bearer("nope"),
    "key-prefix": bearer("acme-alic"),
    "key-4k": bearer("k" * 4000),  # under gRPC's 8 KiB metadata soft limit (above it, refusals are random)
    "key-percent-encoded": bearer("acme%2Dalice"),
    "token-three-dots": bearer("a.b.c"),
    "token-empty-parts": bearer(".."),
    "token-not-base64": bearer("!!!.???.***"),
    "token-expired": bearer(jwt(claims(exp=_now - 3600))),
    "token-not-yet-valid": bearer(jwt(claims(nbf=_now + 3600))),
    "token-alg-none": bearer(jwt(claims(), header={"alg": "none", "typ": "JWT"}, signature="")),
    "token-alg-none-signed": bearer(jwt(claims(), header={"alg": "none"})),
    "token-alg-NONE": bearer(jwt(claims(), header={"alg": "NONE"}, signature="")),
    "token-alg-hs512": bearer(jwt(claims(), header={"alg": "HS512"})),
    "token-alg-rs256": bearer(jwt(claims(), header={"alg": "RS256"})),
    "token-wrong-secret": bearer(jwt(claims(), secret="another-secret-0123456789abcdef0123")),
    "token-tampered-tenant": bearer(
        (
            lambda t: ".".join(
                [t.split(".")[0], _b64(json.dumps(claims(tenant="globex")).encode()), t.split(".")[2]]
            )
        )(jwt(claims()))
    ),
    "token-wrong-audience": bearer(jwt(claims(aud="someone-else"))),
    "token-no-audience": bearer(jwt(claims(aud=None))),
    "token-no-exp": bearer(jwt(claims(exp=None))),
    "token-exp-string": bearer(jwt(claims(exp="tomorrow"))),
    "token-payload-array": bearer(jwt([1, 2, 3])),
    "token-payload-not-json": bearer(jwt(b"not json")),
    "token-header-not-json": bearer(_b64(b"{") + "." + _b64(b"{}") + "." + _b64(b"x")),
}
# Far beyond gRPC's 16 KiB metadata hard limit: the transport itself refuses the call.
add(
    Case(
        "auth-search-key-32k", "auth", "Search", search(), codes=(EXHAUSTED, UNAUTH), md=bearer("k" * 32_000)
    )
)
for _name, _md in BAD_CREDENTIALS.items():
    add(Case(f"auth-search-{_name}", "auth", "Search", search(), codes=(UNAUTH,), md=_md))
for _name in ("no-metadata", "unknown-key", "token-expired", "token-alg-none"):
    _md = BAD_CREDENTIALS[_name]
    add(
        Case(
            f"auth-get-{_name}",
            "auth",
            "GetAsset",
            gateway_pb2.GetAssetRequest(asset_id="seed-0"),
            codes=(UNAUTH,),
            md=_md,
        )
    )
    add(
        Case(
            f"auth-delete-{_name}",
            "auth",
            "DeleteAsset",
            gateway_pb2.DeleteAssetRequest(asset_id="seed-0"),
            codes=(UNAUTH,),
            md=_md,
        )
    )
    add(
        Case(
            f"auth-similar-{_name}",
            "auth",
            "SearchSimilar",
            gateway_pb2.SearchSimilarRequest(asset_id="seed-0"),
            codes=(UNAUTH,),
            md=_md,
        )
    )
    add(Case(f"auth-ingest-{_name}", "auth", "Ingest", [ingest(f"auth-{_name}")], codes=(UNAUTH,), md=_md))
# Claims that are signed but say something the gateway cannot honour.
for _name, _c in {
    "token-tenant-not-a-name": claims(tenant="../acme"),
    "token-roles-string": claims(roles="search"),
    "token-roles-unknown": claims(roles=["superuser"]),
}.items():
    add(Case(f"auth-search-{_name}", "auth", "Search", search(), codes=(UNAUTH, DENIED), md=bearer(jwt(_c))))
add(Case("auth-token-valid", "auth", "Search", search(), md=bearer(jwt(claims()))))
add(Case("auth-lowercase-scheme", "auth", "Search", search(), md=(("authorization", "bearer acme-alice"),)))
# A signed token vouches for its tenant: one the keyring does not list gets the default policy and
# sees only its own (empty) tenant.
add(
    Case(
        "auth-token-unlisted-tenant",
        "auth",
        "Search",
        search("seed picture"),
        md=bearer(jwt(claims(tenant="initech"))),
        check=no_results,
    )
)
add(
    Case("auth-token-no-roles", "auth", "Search", search(), codes=(DENIED,), md=bearer(jwt(claims(roles=[]))))
)
add(
    Case(
        "auth-token-search-only-ingests",
        "auth",
        "Ingest",
        [ingest("auth-token-ingest")],
        codes=(DENIED,),
        md=bearer(jwt(claims())),
    )
)
add(Case("role-reader-ingests", "auth", "Ingest", [ingest("role-reader-item")], codes=(DENIED,), md=READER))
add(
    Case(
        "role-reader-deletes",
        "auth",
        "DeleteAsset",
        gateway_pb2.DeleteAssetRequest(asset_id="seed-0"),
        codes=(DENIED,),
        md=READER,
    )
)
add(Case("role-include-unsafe-without-role", "auth", "Search", search(include_unsafe=True), codes=(DENIED,)))
add(Case("role-include-unsafe-with-role", "auth", "Search", search(include_unsafe=True), md=URSULA))
add(
    Case(
        "role-similar-include-unsafe-without-role",
        "auth",
        "SearchSimilar",
        gateway_pb2.SearchSimilarRequest(asset_id="seed-0", include_unsafe=True),
        codes=(DENIED,),
    )
)
add(Case("licenses-not-allowed", "auth", "Search", search(licenses=["GPL-3.0-only"]), codes=(DENIED,)))
add(
    Case(
        "licenses-1025-names",
        "auth",
        "Search",
        search(licenses=[f"L{i}" for i in range(1025)]),
        codes=(INVALID,),
    )
)
add(Case("licenses-allowed", "auth", "Search", search(licenses=["MIT"])))
# Another tenant's asset: absent for acme, whichever way it is asked for.
add(
    Case(
        "tenant-get-other",
        "auth",
        "GetAsset",
        gateway_pb2.GetAssetRequest(asset_id=SECRET_ID),
        codes=(NOT_FOUND,),
    )
)
add(
    Case(
        "tenant-delete-other",
        "auth",
        "DeleteAsset",
        gateway_pb2.DeleteAssetRequest(asset_id=SECRET_ID),
        codes=(NOT_FOUND,),
    )
)
add(
    Case(
        "tenant-similar-other",
        "auth",
        "SearchSimilar",
        gateway_pb2.SearchSimilarRequest(asset_id=SECRET_ID),
        codes=(NOT_FOUND,),
    )
)
add(
    Case(
        "tenant-filter-other-id",
        "auth",
        "Search",
        search("zephyrine blueprint", filter=cond("asset_id", "eq", SECRET_ID)),
        check=no_results,
    )
)
add(
    Case(
        "tenant-search-other-caption",
        "auth",
        "Search",
        search("zephyrine blueprint", page_size=100),
        check=without(SECRET_ID),
    )
)
add(
    Case(
        "tenant-token-globex-gets-acme",
        "auth",
        "GetAsset",
        gateway_pb2.GetAssetRequest(asset_id="seed-0"),
        codes=(NOT_FOUND,),
        md=bearer(jwt(claims(tenant="globex"))),
    )
)
add(
    Case("tenant-owner-gets-own", "auth", "GetAsset", gateway_pb2.GetAssetRequest(asset_id=SECRET_ID), md=GUS)
)
# S3: the bytes of globex's asset, ingested by acme: stored as acme's own, nothing revealed.
add(
    Case(
        "tenant-ingest-other-bytes",
        "auth",
        "Ingest",
        [ingest("acme-copy-of-secret", image=SECRET.image)],
        items=(Item("acme-copy-of-secret", CREATED),),
    )
)


# ---- streams ---------------------------------------------------------------------------------------

BAD_ITEMS: dict[str, Callable[[str], gateway_pb2.IngestRequest]] = {
    "bad-image": lambda i: ingest(i, image=b"not an image"),
    "empty-image": lambda i: ingest(i, image=b""),
    "bad-expiry": lambda i: ingest(
        i, license=common_pb2.License(name=GOOD_LICENSE, expires_at=ts(TIMESTAMP_MAX_SECONDS + 1))
    ),
    "nan-popularity": lambda i: ingest(i, popularity=NAN),
    "no-license": lambda i: gateway_pb2.IngestRequest(asset_id=i, image=picture()),
    "truncated-png": lambda i: ingest(i, image=picture()[:60]),
}
for _name, _bad in BAD_ITEMS.items():
    _ok1, _bad_id, _ok2 = f"st-{_name}-ok1", f"st-{_name}-bad", f"st-{_name}-ok2"
    add(
        Case(
            f"stream-ok-{_name}-ok",
            "streams",
            "Ingest",
            [ingest(_ok1), _bad(_bad_id), ingest(_ok2)],
            items=(Item(_ok1, CREATED), Item(_bad_id, FAILED, (C_INVALID,)), Item(_ok2, CREATED)),
        )
    )
add(Case("stream-empty", "streams", "Ingest", []))
add(
    Case(
        "stream-first-bad",
        "streams",
        "Ingest",
        [ingest("st-first-bad", image=b"GIF89a"), ingest("st-first-ok")],
        items=(Item("st-first-bad", FAILED, (C_INVALID,)), Item("st-first-ok", CREATED)),
    )
)
add(
    Case(
        "stream-all-bad",
        "streams",
        "Ingest",
        [ingest(f"st-all-bad-{i}", image=b"\x00" * i) for i in range(1, 6)],
        items=tuple(Item(f"st-all-bad-{i}", FAILED, (C_INVALID,)) for i in range(1, 6)),
    )
)
_same = picture()
add(
    Case(
        "stream-duplicate-id-same-bytes",
        "streams",
        "Ingest",
        [ingest("st-dup-same", _same), ingest("st-dup-same", _same)],
        items=(Item("st-dup-same", CREATED), Item("st-dup-same", UNCHANGED)),
    )
)
add(
    Case(
        "stream-duplicate-id-other-bytes",
        "streams",
        "Ingest",
        [ingest("st-dup-other"), ingest("st-dup-other")],
        items=(Item("st-dup-other", CREATED), Item("st-dup-other", UPDATED)),
    )
)
_twin = picture()
add(
    Case(
        "stream-same-bytes-two-ids",
        "streams",
        "Ingest",
        [ingest("st-twin-a", _twin), ingest("st-twin-b", _twin)],
        items=(Item("st-twin-a", CREATED), Item("st-twin-b", DUPLICATE)),
    )
)
add(
    Case(
        "stream-resend-seeds",
        "streams",
        "Ingest",
        SEEDS,
        items=tuple(Item(r.asset_id, UNCHANGED) for r in SEEDS),
    )
)
_mixed = [ingest(f"st-mixed-{i}") if i % 3 else ingest(f"st-mixed-{i}", image=b"junk") for i in range(12)]
add(
    Case(
        "stream-12-mixed",
        "streams",
        "Ingest",
        _mixed,
        items=tuple(
            Item(r.asset_id, CREATED if i % 3 else FAILED, () if i % 3 else (C_INVALID,))
            for i, r in enumerate(_mixed)
        ),
    )
)
_triple = [ingest("st-triple"), ingest("st-triple", image=b"junk"), ingest("st-triple")]
add(
    Case(
        "stream-same-id-good-bad-good",
        "streams",
        "Ingest",
        _triple,
        items=(
            Item("st-triple", CREATED),
            Item("st-triple", FAILED, (C_INVALID,)),
            Item("st-triple", UPDATED),
        ),
    )
)
add(
    Case(
        "stream-same-id-bad-then-good",
        "streams",
        "Ingest",
        [ingest("st-bad-good", image=b"\x89PNG"), ingest("st-bad-good")],
        items=(Item("st-bad-good", FAILED, (C_INVALID,)), Item("st-bad-good", CREATED)),
    )
)
_many = [ingest(f"st-many-{i}") for i in range(24)]
add(
    Case(
        "stream-24-in-flight",
        "streams",
        "Ingest",
        _many,
        items=tuple(Item(r.asset_id, CREATED) for r in _many),
    )
)
_undecodable = _field(1, b"st-raw") + _field(4, b"caption \xff")
add(Case("stream-undecodable-item", "streams", "raw:Ingest", [_undecodable], codes=(INVALID,)))
add(
    Case(
        "stream-truncated-item",
        "streams",
        "raw:Ingest",
        [ingest("st-trunc").SerializeToString()[:-3]],
        codes=(INVALID,),
    )
)


# ---- last: inputs that may keep a service busy ----------------------------------------------------

_LONG = "long caption " * 2000  # 26,000 characters, no "b"
LAST_CASES.append(
    Case(
        "filter-like-long-caption-setup",
        "filters",
        "Ingest",
        [ingest("globex-long-caption", caption=_LONG)],
        items=(Item("globex-long-caption", CREATED),),
        md=GUS,
    )
)
LAST_CASES.append(
    Case(
        "filter-like-backtracking",
        "filters",
        "Search",
        fsearch(cond("caption", "like", "*a*a*b")),
        codes=(OK, INVALID),  # no match, or a refused pattern
        md=GUS,
        max_s=1.0,
    )
)
LAST_CASES.append(
    Case(
        "filter-like-many-wildcards",
        "filters",
        "Search",
        fsearch(cond("caption", "like", "*a" * 40 + "b")),
        codes=(OK, INVALID),
        md=GUS,
        max_s=1.0,
    )
)
