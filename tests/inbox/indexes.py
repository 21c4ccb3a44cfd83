"""Which composite index a Firestore query needs, and whether ``firestore.indexes.json`` has it.

The emulator does not enforce indexes, so a query that production would refuse with
FAILED_PRECONDITION runs fine in tests. These rules restate Firestore's: single-field indexes
exist by themselves for collection queries, so a query needs a composite index when it
combines filters with an order on another field, or orders on several fields; a
collection-group query also needs one for equality filters on several fields (single-field
indexes are not automatic at collection-group scope). Equality fields come first in the
index, in any order; ordered fields follow, in the query's order and direction. A trailing
``__name__`` (Firestore's implicit tie-break) is ignored on both sides.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

INDEX_FILE = Path(__file__).resolve().parents[2] / "firestore.indexes.json"


class IndexField(msgspec.Struct, frozen=True, rename="camel"):
    field_path: str
    order: str


class Index(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    collection_group: str
    query_scope: str
    fields: tuple[IndexField, ...]


class IndexFile(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    indexes: tuple[Index, ...]
    field_overrides: tuple[dict[str, Any], ...] = ()


class QueryShape(msgspec.Struct, frozen=True, kw_only=True):
    """What decides a query's index: its collection, scope, filters and orders."""

    collection: str
    collection_group: bool = False
    equality: frozenset[str] = frozenset()
    ranges: tuple[str, ...] = ()
    orders: tuple[tuple[str, str], ...] = ()  # (field, ASCENDING | DESCENDING)


def load_indexes(path: Path = INDEX_FILE) -> IndexFile:
    return msgspec.json.decode(path.read_bytes(), type=IndexFile)


def shape_of(query_pb: Any) -> QueryShape:
    """The shape of a ``StructuredQuery`` protobuf (``Query._to_protobuf()``)."""
    selector = query_pb.from_[0]
    equality: set[str] = set()
    ranges: list[str] = []

    def visit(filt: Any) -> None:
        kind = filt._pb.WhichOneof("filter_type")
        if kind == "composite_filter":
            for inner in filt.composite_filter.filters:
                visit(inner)
        elif kind == "field_filter":
            op = filt.field_filter.op.name
            path = filt.field_filter.field.field_path
            (equality.add(path) if op in ("EQUAL", "ARRAY_CONTAINS") else ranges.append(path))
        elif kind == "unary_filter":
            equality.add(filt.unary_filter.field.field_path)

    if query_pb._pb.HasField("where"):
        visit(query_pb.where)
    orders = tuple((o.field.field_path, o.direction.name) for o in query_pb.order_by
                   if o.field.field_path != "__name__")
    return QueryShape(collection=selector.collection_id, collection_group=selector.all_descendants,
                      equality=frozenset(equality), ranges=tuple(ranges), orders=orders)


def needs_composite(shape: QueryShape) -> bool:
    ordered = {field for field, _ in shape.orders} | set(shape.ranges)
    if len(ordered) > 1:
        return True
    if shape.equality and ordered - shape.equality:
        return True
    return shape.collection_group and len(shape.equality) > 1


def covering_index(shape: QueryShape, indexes: IndexFile) -> Index | None:
    """The index of ``indexes`` that serves ``shape``, or None."""
    scope = "COLLECTION_GROUP" if shape.collection_group else "COLLECTION"
    orders = list(shape.orders) or [(field, "ASCENDING") for field in shape.ranges]
    for index in indexes.indexes:
        if index.collection_group != shape.collection:
            continue
        if index.query_scope != scope and not (scope == "COLLECTION" and index.query_scope == "COLLECTION_GROUP"):
            continue
        fields = [(f.field_path, f.order) for f in index.fields if f.field_path != "__name__"]
        head, tail = fields[: len(shape.equality)], fields[len(shape.equality):]
        if {path for path, _ in head} == shape.equality and tail == [o for o in orders if o[0] not in shape.equality]:
            return index
    return None


def describe(shape: QueryShape) -> str:
    return json.dumps(msgspec.to_builtins(shape), sort_keys=True)
