"""The README and docs/ point only at things that exist.

Every relative markdown link or image (anchors included, as GitHub spells them) and every repository
path quoted in backticks must resolve, so that a moved results folder or renamed module cannot leave a
number without its source. The README keeps the two set-up commands first and stays short.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200

FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *$", re.MULTILINE)
# A path into the repository quoted as code: `results/x/`, `lit_lora/data/base.py` (no globs, placeholders).
QUOTED_PATH = re.compile(r"`((?:configs|results|benchmarks|tests|sweeps|lit_lora|docs)/[\w./-]*)`")


def prose(page: Path) -> str:
    """The page without fenced code blocks (their text is commands, not links)."""
    return FENCE.sub("", page.read_text(encoding="utf-8"))


def anchors(page: Path) -> set[str]:
    """Heading anchors as GitHub makes them: lower case, punctuation dropped, spaces to '-', repeats '-N'."""
    seen: dict[str, int] = {}
    for heading in HEADING.findall(prose(page)):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            seen[f"{slug}-{count}"] = 1
    return set(seen)


def broken_targets(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(prose(page)):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.relative_to(ROOT)}")
    for quoted in QUOTED_PATH.findall(prose(page)):
        if not (ROOT / quoted).exists():
            broken.append(f"`{quoted}`: no such path in the repository")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_and_quoted_path_resolves(page: Path) -> None:
    assert broken_targets(page) == []


def test_anchor_slugs_follow_github(tmp_path: Path) -> None:
    # GitHub lower-cases, drops punctuation but '-' and '_', turns spaces into '-', numbers repeats.
    page = tmp_path / "page.md"
    page.write_text("# Scaling out: DDP, DeepSpeed ZeRO-2/3, MPS\n\n## Notes\n\n## Notes\n", encoding="utf-8")
    assert {"scaling-out-ddp-deepspeed-zero-23-mps", "notes", "notes-1"} <= anchors(page)


def test_readme_starts_with_the_two_commands_and_stays_short() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = FENCE.search(text)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(0).splitlines()[1:-1]]
    assert commands == ["make demo", "make test"]
    assert len(text.splitlines()) <= README_MAX_LINES, "move long sections into docs/"
