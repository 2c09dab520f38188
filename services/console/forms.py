"""HTML form fields and query strings <-> SearchQuery: parsing with a precise message per bad field,
and the query string that carries a search to its next page."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from urllib.parse import urlencode

from services.console.domain import InvalidInput, SearchQuery

MAX_TEXT_CHARS = 1000
# The fields a search's URL carries (never the key; the query image only as a session reference).
SEARCH_FIELDS = ("text", "alpha", "rerank", "text_weight", "mmr_lambda", "license", "tag", "from", "to", "n")


def _unit_float(form: Mapping[str, str], name: str, label: str) -> float | None:
    raw = form.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"{label} must be a number between 0 and 1 (got {raw[:20]!r})") from None
    if not 0.0 <= value <= 1.0:
        raise InvalidInput(f"{label} must be between 0 and 1 (got {value:g})")
    return value


def _date(form: Mapping[str, str], name: str, label: str) -> dt.date | None:
    raw = form.get(name, "").strip()
    if not raw:
        return None
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(f"{label} must be a date as YYYY-MM-DD (got {raw[:20]!r})") from None


def _page_size(form: Mapping[str, str], default: int) -> int:
    raw = form.get("n", "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise InvalidInput(f"results per page must be a whole number from 1 to 100 (got {raw[:20]!r})")
    return int(raw)


def search_query(
    form: Mapping[str, str], image: bytes | None, default_page_size: int, page_token: str = ""
) -> SearchQuery:
    """The search a form (or a results URL) describes; InvalidInput names the first bad field."""
    text = form.get("text", "").strip()
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidInput(f"the query text is {len(text)} characters; at most {MAX_TEXT_CHARS} are accepted")
    created_from = _date(form, "from", "'created from'")
    created_to = _date(form, "to", "'created to'")
    if created_from and created_to and created_from > created_to:
        raise InvalidInput("'created from' is after 'created to'")
    return SearchQuery(
        text=text,
        image=image,
        alpha=_unit_float(form, "alpha", "alpha"),
        rerank=form.get("rerank", "on") != "off",
        text_weight=_unit_float(form, "text_weight", "text weight"),
        mmr_lambda=_unit_float(form, "mmr_lambda", "MMR lambda"),
        licenses=tuple(x.strip() for x in form.get("license", "").split(",") if x.strip()),
        tag=form.get("tag", "").strip(),
        created_from=created_from,
        created_to=created_to,
        page_size=_page_size(form, default_page_size),
        page_token=page_token,
    )


def search_params(form: Mapping[str, str], image_ref: str = "") -> str:
    """The URL query string of a search (without its page token), for redirects and page links."""
    pairs = [(name, form[name]) for name in SEARCH_FIELDS if form.get(name, "").strip()]
    if image_ref:
        pairs.append(("img", image_ref))
    return urlencode(pairs)
