"""The README and docs stand alone: they cite no file outside the repository.

Checked: README.md, every file under docs/, and the *.py / *.yaml / *.yml files under schemas/,
streams/, agents/ and deploy/ (their comments and docstrings cite sources too). None may mention
a ``shared/...`` path or a ``../`` path that leaves the repository, and every relative Markdown
link in README.md and docs/*.md must point at a file (and heading) that exists here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CODE_DIRS = ("schemas", "streams", "agents", "deploy")
CODE_SUFFIXES = {".py", ".yaml", ".yml"}

SHARED = re.compile(r"(?<![\w.-])shared/")
UP_PATH = re.compile(r"(?:\.\./)+[^\s'\"`)\]>,;]*")
HOST_PATH = re.compile(r"(?<![\w.-])/work/")
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
INLINE_LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def checked_files(root: Path) -> list[Path]:
    files = [root / "README.md"]
    docs = root / "docs"
    if docs.is_dir():
        files += [p for p in docs.rglob("*") if p.is_file()]
    for d in CODE_DIRS:
        if (root / d).is_dir():
            files += [p for p in (root / d).rglob("*") if p.suffix in CODE_SUFFIXES]
    return sorted(f for f in files if f.is_file())


def markdown_files(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def inside(root: Path, path: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def outside_references(root: Path, path: Path) -> list[str]:
    """Each mention in ``path`` of a file outside the repository, as ``file:line: text``."""
    problems = []
    rel = path.relative_to(root)
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        found = [m.group() for m in SHARED.finditer(line)]
        found += [m.group() for m in HOST_PATH.finditer(line)]
        found += [
            m.group() for m in UP_PATH.finditer(line) if not inside(root, path.parent / m.group())
        ]
        problems += [f"{rel}:{n}: {f!r}" for f in found]
    return problems


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    result = set()
    for m in HEADING.finditer(text):
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        result.add(base if n == 0 else f"{base}-{n}")
    return result


def broken_links(root: Path, path: Path) -> list[str]:
    """Each relative link in the Markdown file ``path`` whose target is missing or outside."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    targets = [m.group(1) for m in INLINE_LINK.finditer(text)]
    targets += [m.group(1) for m in REF_LINK.finditer(text)]
    rel = path.relative_to(root)
    problems = []
    for target in targets:
        if SCHEME.match(target):
            continue  # a URL: a public source, not a file
        file_part, _, fragment = target.partition("#")
        dest = (path.parent / file_part) if file_part else path
        if not file_part and not fragment:
            problems.append(f"{rel}: empty link target")
        elif file_part.startswith("/") or not inside(root, dest):
            problems.append(f"{rel}: {target!r} leaves the repository")
        elif not dest.exists():
            problems.append(f"{rel}: {target!r} does not exist")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            problems.append(f"{rel}: {target!r} names no heading of {dest.relative_to(root)}")
    return problems


def test_the_checked_files_include_the_readme_docs_and_code() -> None:
    names = {p.relative_to(REPO).as_posix() for p in checked_files(REPO)}
    assert {"README.md", "docs/domain.md", "streams/levels.py"} <= names
    assert "deploy/zones/phitsanulok.yaml" in names


def test_nothing_cites_a_file_outside_the_repository() -> None:
    problems = [p for f in checked_files(REPO) for p in outside_references(REPO, f)]
    assert problems == []


def test_every_relative_markdown_link_resolves() -> None:
    problems = [p for f in markdown_files(REPO) for p in broken_links(REPO, f)]
    assert problems == []


# The checks themselves, on a small made-up repository: each must catch what it is for.


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / "streams").mkdir()
    (root / "README.md").write_text("# Title\n\n## Density levels\n\nSee [d](docs/a.md).\n")
    (root / "docs" / "a.md").write_text("# A\n\n## 1. Density levels\n\nBack: [r](../README.md)\n")
    return root


def test_a_shared_path_in_a_docstring_is_caught(repo: Path) -> None:
    (repo / "streams" / "x.py").write_text('"""Sources in ``shared/DOMAIN.md``."""\n')
    assert outside_references(repo, repo / "streams" / "x.py") == ["streams/x.py:1: 'shared/'"]


def test_an_up_path_counts_only_when_it_leaves_the_repository(repo: Path) -> None:
    f = repo / "docs" / "b.md"
    f.write_text("[in](../README.md) and [out](../../shared/DOMAIN.md)\n")
    assert outside_references(repo, f) == [
        "docs/b.md:1: 'shared/'",
        "docs/b.md:1: '../../shared/DOMAIN.md'",
    ]
    assert broken_links(repo, f) == ["docs/b.md: '../../shared/DOMAIN.md' leaves the repository"]


def test_links_to_missing_files_and_headings_are_caught(repo: Path) -> None:
    (repo / "README.md").write_text(
        "# T\n\n[ok](docs/a.md#1-density-levels) [web](https://example.org/x.md)\n"
        "[gone](docs/gone.md) [bad anchor](docs/a.md#nope) [here](#t)\n"
        "[multi\nline](docs/missing.md)\n\n```\n[in code](not/checked.md)\n```\n"
    )
    assert broken_links(repo, repo / "README.md") == [
        "README.md: 'docs/gone.md' does not exist",
        "README.md: 'docs/a.md#nope' names no heading of docs/a.md",
        "README.md: 'docs/missing.md' does not exist",
    ]


def test_the_made_up_repository_is_clean(repo: Path) -> None:
    assert [p for f in checked_files(repo) for p in outside_references(repo, f)] == []
    assert [p for f in markdown_files(repo) for p in broken_links(repo, f)] == []
