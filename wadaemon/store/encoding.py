"""Documents <-> plain field maps, and document-id escaping, shared by both adapters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from wadaemon.domain import Doc
from wadaemon.store.contract import StoreError

D = TypeVar("D", bound=Doc)

_RESERVED = (".", "..")

#: Firestore's limit on a document id (UTF-8 bytes); the SQLite store keeps the same rule, so a
#: document that one backend refuses is refused by both, the same way (a ``StoreError``).
MAX_DOC_ID_BYTES = 1500


def escape_doc_id(raw: str) -> str:
    """A reversible document id: Firestore forbids ``/`` in ids, ``.``/``..`` and ``__x__``.

    ``%`` is escaped first so that the mapping stays reversible (``unescape_doc_id``).
    """
    escaped = raw.replace("%", "%25").replace("/", "%2F")
    if escaped in _RESERVED or (escaped.startswith("__") and escaped.endswith("__")):
        escaped = "%" + escaped
    size = len(escaped.encode("utf-8", "surrogatepass"))
    if size > MAX_DOC_ID_BYTES:
        raise StoreError(f"document id of {size} bytes (at most {MAX_DOC_ID_BYTES})")
    return escaped


def unescape_doc_id(escaped: str) -> str:
    if escaped.startswith("%") and not escaped.startswith(("%25", "%2F")):
        escaped = escaped[1:]
    return escaped.replace("%2F", "/").replace("%25", "%")


def document_fields(doc: Doc) -> dict[str, Any]:
    """The fields to write: camelCase names, datetimes kept as datetimes, None left out
    (None means *absent* in every document of docs/data-model.md)."""
    fields = msgspec.to_builtins(doc, builtin_types=(datetime,))
    assert isinstance(fields, dict)
    return _drop_none(fields)


def document_from_fields(fields: dict[str, Any], doc_type: type[D]) -> D:
    """Decode stored fields; unknown fields (written by other tools) are ignored."""
    return msgspec.convert(fields, doc_type, strict=False)


def _drop_none(value: dict[str, Any]) -> dict[str, Any]:
    return {
        key: _drop_none(item) if isinstance(item, dict) else item
        for key, item in value.items()
        if item is not None
    }


def store_now() -> datetime:
    """Now, truncated to milliseconds: Firestore keeps timestamps at ms precision, and a stamp
    that would not survive a round trip would make an unchanged document look changed."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
