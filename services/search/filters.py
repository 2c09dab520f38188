"""Typed filter expressions: the field catalogue, validation and a canonical form.

The servicer turns a proto `Filter` tree into these dataclasses through `condition()`, `all_of()`,
`any_of()` and `negate()`, which validate field names, operator/field compatibility and operand types
(InvalidArgument naming the field and what is allowed). Each backend compiles the validated tree to its
own language (Weaviate `Filter`s, numpy masks). `canonical()` gives an order-independent form used in
cache keys: `a AND b` and `b AND a` share a cache entry, as do IN lists given in different orders.

Value semantics, identical on every backend:
- A string field with an empty value, an array field with no elements and an unset timestamp have
  "no value": IS_NULL(true) matches them; comparisons other than NOT_EQUAL do not.
- NOT_EQUAL and NOT match assets without a value (they are the complement of EQUAL / the inner filter).
- Numbers (width, height, safety_score, popularity) always have a value.
- String comparisons are exact and case-sensitive; LIKE matches the whole string with `*` (any run of
  characters) and `?` (one character).
- EQUAL on an array field (tags, safety_labels) means "contains the value".
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from services.common.errors import InvalidArgument
from services.common.limits import MAX_LIST_VALUES


class FieldType(Enum):
    STRING = "string"
    STRING_ARRAY = "string array"
    INT = "integer"
    FLOAT = "number"
    TIMESTAMP = "timestamp"


class Op(Enum):
    EQUAL = "equal"
    NOT_EQUAL = "not_equal"
    GREATER_THAN = "greater_than"
    GREATER_THAN_OR_EQUAL = "greater_than_or_equal"
    LESS_THAN = "less_than"
    LESS_THAN_OR_EQUAL = "less_than_or_equal"
    IN = "in"
    CONTAINS_ANY = "contains_any"
    CONTAINS_ALL = "contains_all"
    LIKE = "like"
    IS_NULL = "is_null"


# Filterable fields and their types (the proto's list, in its order).
FIELDS: dict[str, FieldType] = {
    "asset_id": FieldType.STRING,
    "uri": FieldType.STRING,
    "caption": FieldType.STRING,
    "tags": FieldType.STRING_ARRAY,
    "owner": FieldType.STRING,
    "source": FieldType.STRING,
    "license_name": FieldType.STRING,
    "license_expires_at": FieldType.TIMESTAMP,
    "safety_score": FieldType.FLOAT,
    "safety_labels": FieldType.STRING_ARRAY,
    "created_at": FieldType.TIMESTAMP,
    "updated_at": FieldType.TIMESTAMP,
    "width": FieldType.INT,
    "height": FieldType.INT,
    "content_sha256": FieldType.STRING,
    "popularity": FieldType.FLOAT,
}

# Fields the service filters on itself and callers cannot name (condition() refuses them): the
# analysis state that keeps unanalysed assets out of every query (see `analysed_only`).
INTERNAL_FIELDS: dict[str, FieldType] = {"analysis_state": FieldType.STRING}

RANGE_OPS = frozenset({Op.GREATER_THAN, Op.GREATER_THAN_OR_EQUAL, Op.LESS_THAN, Op.LESS_THAN_OR_EQUAL})
LIST_OPS = frozenset({Op.IN, Op.CONTAINS_ANY, Op.CONTAINS_ALL})

ALLOWED_OPS: dict[FieldType, frozenset[Op]] = {
    FieldType.STRING: frozenset({Op.EQUAL, Op.NOT_EQUAL, Op.IN, Op.LIKE, Op.IS_NULL}),
    FieldType.STRING_ARRAY: frozenset({Op.EQUAL, Op.CONTAINS_ANY, Op.CONTAINS_ALL, Op.IS_NULL}),
    FieldType.INT: frozenset({Op.EQUAL, Op.NOT_EQUAL, Op.IN, *RANGE_OPS}),
    FieldType.FLOAT: frozenset({Op.EQUAL, Op.NOT_EQUAL, Op.IN, *RANGE_OPS}),
    FieldType.TIMESTAMP: frozenset({Op.EQUAL, Op.NOT_EQUAL, Op.IS_NULL, *RANGE_OPS}),
}

# The operand kind (proto Value oneof name) each field type takes.
OPERAND_KIND: dict[FieldType, str] = {
    FieldType.STRING: "string_value",
    FieldType.STRING_ARRAY: "string_value",
    FieldType.INT: "int_value",
    FieldType.FLOAT: "double_value",
    FieldType.TIMESTAMP: "timestamp_value",
}

Scalar = str | int | float | bool | datetime


@dataclass(frozen=True, slots=True)
class TypedValue:
    """An operand as the caller typed it: kind is the proto Value oneof name (e.g. "int_value")."""

    kind: str
    value: Scalar


@dataclass(frozen=True, slots=True)
class Condition:
    field: str
    op: Op
    # One value for scalar operators (a bool for IS_NULL), several for IN / CONTAINS_*.
    values: tuple[Scalar, ...]

    @property
    def type(self) -> FieldType:
        return FIELDS.get(self.field) or INTERNAL_FIELDS[self.field]

    @property
    def value(self) -> Scalar:
        return self.values[0]


@dataclass(frozen=True, slots=True)
class AllOf:
    children: tuple[FilterNode, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    children: tuple[FilterNode, ...]


@dataclass(frozen=True, slots=True)
class Not:
    child: FilterNode


FilterNode = Condition | AllOf | AnyOf | Not


def _allowed_fields() -> str:
    return ", ".join(FIELDS)


def _coerce(field: str, ftype: FieldType, op: Op, tv: TypedValue) -> Scalar:
    if op is Op.IS_NULL:
        if tv.kind != "bool_value":
            raise InvalidArgument(
                f"filter on '{field}': IS_NULL takes a bool_value (true = has no value), got {tv.kind}"
            )
        return bool(tv.value)
    want = OPERAND_KIND[ftype]
    if tv.kind == want:
        value = tv.value
    elif ftype is FieldType.FLOAT and tv.kind == "int_value":
        value = float(tv.value)  # type: ignore[arg-type]  # an integer is an exact number: accepted for number fields
    else:
        raise InvalidArgument(
            f"filter on '{field}' ({ftype.value}): operand must be a {want}, got {tv.kind or 'no value'}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgument(f"filter on '{field}': operand must be finite, got {value}")
    if isinstance(value, datetime):
        value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if op is Op.LIKE and not str(value):
        raise InvalidArgument(f"filter on '{field}': LIKE needs a non-empty pattern")
    return value


def condition(
    field: str, op: Op | None, value: TypedValue | None, values: list[TypedValue] | None
) -> Condition:
    """Validate one comparison; raises InvalidArgument naming what is wrong and what is allowed."""
    ftype = FIELDS.get(field)
    if ftype is None:
        raise InvalidArgument(f"unknown filter field '{field}'; filterable fields: {_allowed_fields()}")
    allowed = ALLOWED_OPS[ftype]
    if op is None:
        raise InvalidArgument(f"filter on '{field}': operator is unset")
    if op not in allowed:
        names = ", ".join(sorted(o.name for o in allowed))
        raise InvalidArgument(
            f"filter on '{field}' ({ftype.value}): operator {op.name} is not supported; use one of {names}"
        )
    if op in LIST_OPS:
        if value is not None or not values:
            raise InvalidArgument(f"filter on '{field}': {op.name} takes a non-empty `values` list")
        if len(values) > MAX_LIST_VALUES:
            raise InvalidArgument(
                f"filter on '{field}': {op.name} takes at most {MAX_LIST_VALUES} values, got {len(values)}"
            )
        coerced = tuple(_coerce(field, ftype, op, v) for v in values)
        return Condition(field, op, tuple(sorted(set(coerced), key=_sort_key)))
    if values:
        raise InvalidArgument(f"filter on '{field}': {op.name} takes a single `value`, not a list")
    if value is None:
        raise InvalidArgument(f"filter on '{field}': {op.name} needs a `value`")
    return Condition(field, op, (_coerce(field, ftype, op, value),))


def all_of(children: list[FilterNode]) -> FilterNode:
    if not children:
        raise InvalidArgument("filter all_of needs at least one member")
    return children[0] if len(children) == 1 else AllOf(tuple(children))


def any_of(children: list[FilterNode]) -> FilterNode:
    if not children:
        raise InvalidArgument("filter any_of needs at least one member")
    return children[0] if len(children) == 1 else AnyOf(tuple(children))


def negate(child: FilterNode) -> FilterNode:
    return child.child if isinstance(child, Not) else Not(child)


def count_nodes(node: FilterNode) -> int:
    if isinstance(node, Condition):
        return 1
    if isinstance(node, Not):
        return 1 + count_nodes(node.child)
    return 1 + sum(count_nodes(c) for c in node.children)


def _sort_key(v: Scalar) -> tuple[str, str]:
    return (type(v).__name__, _scalar_json(v))


def _scalar_json(v: Scalar) -> str:
    if isinstance(v, datetime):
        return v.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(v, float):
        return repr(v)
    return json.dumps(v)


def canonical(node: FilterNode | None) -> Any:
    """An order-independent JSON-able form: nested ANDs/ORs flattened, members sorted and deduplicated."""
    if node is None:
        return None
    if isinstance(node, Condition):
        return ["c", node.field, node.op.value, [_scalar_json(v) for v in node.values]]
    if isinstance(node, Not):
        return ["not", canonical(node.child)]
    tag = "and" if isinstance(node, AllOf) else "or"
    members: set[str] = set()
    stack = list(node.children)
    while stack:
        child = stack.pop()
        if type(child) is type(node):
            stack.extend(child.children)  # type: ignore[union-attr]
        else:
            members.add(json.dumps(canonical(child), separators=(",", ":")))
    return [tag, sorted(members)]


def like_matches(pattern: str, text: str) -> bool:
    """Does `text` match the LIKE pattern as a whole (`*` any run, `?` one character)?

    A linear scan that remembers only the last `*`, never a backtracking regex: a pattern like
    `*a*a*a*a*b` against a long run of `a`s costs O(len(pattern) * len(text)), not exponential time.
    """
    p = t = 0
    star, star_t = -1, 0
    while t < len(text):
        if p < len(pattern) and pattern[p] == "*":
            star, star_t = p, t
            p += 1
        elif p < len(pattern) and (pattern[p] == "?" or pattern[p] == text[t]):
            p += 1
            t += 1
        elif star >= 0:  # let the last `*` swallow one more character and retry after it
            star_t += 1
            p, t = star + 1, star_t
        else:
            return False
    return all(ch == "*" for ch in pattern[p:])


def analysed_only(node: FilterNode | None, hidden: tuple[str, ...]) -> FilterNode:
    """`node` restricted to assets whose analysis state is none of `hidden` (an asset without a state
    was stored before states existed and counts as analysed: NOT IN matches it on every backend)."""
    visible = Not(Condition("analysis_state", Op.IN, tuple(sorted(hidden))))
    if node is None:
        return visible
    return AllOf((node, visible))
