"""docs/http-api.md describes every route of the OpenAPI document, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

from wadaemon.http.app import all_routes
from wadaemon.http.openapi import build_document

DOC = Path(__file__).resolve().parents[2] / "docs" / "http-api.md"


def test_every_route_of_the_document_has_its_section_and_every_section_a_route() -> None:
    sections = set(re.findall(r"^### (GET|POST|PUT|PATCH|DELETE) (\S+)$", DOC.read_text(), re.M))
    document = build_document(all_routes())
    served = {(method.upper(), path) for path, operations in document["paths"].items() for method in operations}
    assert served - sections == set(), "routes missing from docs/http-api.md"
    assert sections - served == set(), "docs/http-api.md describes routes that are not served"
