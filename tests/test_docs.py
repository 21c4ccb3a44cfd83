"""The code, README and docs point only inside the repository, and every docs link resolves."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUTSIDE = re.compile(r"shared/|\bSPEC\b|NEONIZE\.md")


def readable_files() -> list[Path]:
    files = [REPO / "README.md", REPO / "env.auto-backfill.example"]
    files += sorted((REPO / "wadaemon").rglob("*.py")) + sorted((REPO / "docs").rglob("*.md"))
    return files


def test_nothing_points_outside_the_repository() -> None:
    offenders = [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
                 for path in readable_files()
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if OUTSIDE.search(line)]
    assert offenders == []


def test_docs_links_resolve() -> None:
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)\)", path.read_text(encoding="utf-8")):
            assert (path.parent / target).exists(), f"{path.relative_to(REPO)} links to missing {target}"

