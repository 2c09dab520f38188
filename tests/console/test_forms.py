"""The search form's parsing (pure logic): every bad field gets a message naming it."""

from __future__ import annotations

import datetime as dt

import pytest

from services.console import convert, forms
from services.console.domain import InvalidInput
from services.console.security import sniff_image_type, upload_problem


def test_a_full_form_becomes_one_query() -> None:
    query = forms.search_query(
        {
            "text": " cat ",
            "alpha": "0.3",
            "rerank": "off",
            "license": "MIT, CC0-1.0",
            "tag": "pets",
            "from": "2026-01-01",
            "to": "2026-02-01",
            "n": "50",
        },
        None,
        24,
        "tok",
    )
    assert query.text == "cat" and query.alpha == 0.3 and not query.rerank
    assert query.licenses == ("MIT", "CC0-1.0") and query.page_size == 50 and query.page_token == "tok"
    request = convert.search_request_pb(query)
    assert request.rerank.disable and len(request.filter.all_of.filters) == 3
    assert request.HasField("alpha") and not request.rerank.HasField("text_weight")


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"alpha": "x"}, "alpha must be a number between 0 and 1 (got 'x')"),
        ({"mmr_lambda": "-1"}, "MMR lambda must be between 0 and 1 (got -1)"),
        ({"n": "500"}, "results per page must be a whole number from 1 to 100 (got '500')"),
        ({"from": "yesterday"}, "'created from' must be a date as YYYY-MM-DD (got 'yesterday')"),
        ({"from": "2026-02-01", "to": "2026-01-01"}, "'created from' is after 'created to'"),
    ],
)
def test_a_bad_field_is_named(form: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidInput) as err:
        forms.search_query({"text": "cat", **form}, None, 24)
    assert str(err.value) == message


def test_search_params_carry_the_form_but_never_a_page_token() -> None:
    assert forms.search_params({"text": "a b", "page": "t", "csrf": "c"}, "ref") == "text=a+b&img=ref"


def test_the_date_filter_spans_whole_days() -> None:
    query = forms.search_query({"text": "x", "to": "2026-01-01"}, None, 24)
    bound = convert.filter_pb(query)
    assert bound is not None
    end = bound.condition.value.timestamp_value.ToDatetime()
    assert end.date() == dt.date(2026, 1, 1) and end.hour == 23


def test_uploads_are_judged_by_their_bytes() -> None:
    assert sniff_image_type(b"\x89PNG\r\n\x1a\n....") == "image/png"
    assert sniff_image_type(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert (
        upload_problem("a.png", "image/png", b"<svg/>", 100)
        == "a.png: the file's content is not an image of an accepted type"
    )
    assert upload_problem("a.svg", "image/svg+xml", b"<svg/>", 100) is not None  # SVG can carry script
    assert upload_problem("a.png", "image/png", b"\x89PNG\r\n\x1a\n" + b"0" * 200, 100) is not None
