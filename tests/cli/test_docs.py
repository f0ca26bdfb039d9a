"""The README and docs/ stay true: every relative link (and its #anchor) resolves, every
`histosweep X --flag` in a command block names a real subcommand and a flag its --help lists.
Exercise: `python -m pytest -q tests/cli/test_docs.py`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from histosweep.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
NOT_COMMANDS = {"text", "toml", "json", "yaml", "python", "csv"}  # fenced blocks of other kinds


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _split(page: Path) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """A page's prose lines and its fenced blocks as (info string, lines)."""
    prose: list[str] = []
    blocks: list[tuple[str, list[str]]] = []
    block: tuple[str, list[str]] | None = None
    for line in page.read_text(encoding="utf-8").split("\n"):
        if line.startswith("```"):
            if block is None:
                block = (line[3:].strip(), [])
            else:
                blocks.append(block)
                block = None
        elif block is not None:
            block[1].append(line)
        else:
            prose.append(line)
    return prose, blocks


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    for line in _split(page)[0]:
        match = re.match(r"#{1,6} (.+)", line)
        if match:
            slug = _slug(match.group(1))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            if count:
                seen[f"{slug}-{count}"] = 1
    return set(seen)


def _links(page: Path) -> list[str]:
    prose = "\n".join(_split(page)[0])
    prose = re.sub(r"`[^`\n]*`", "", prose)  # a link-like thing in inline code is not a link
    return [t for t in LINK.findall(prose) if not re.match(r"[a-z]+:", t)]


def _broken_links(page: Path) -> list[str]:
    broken = []
    for target in _links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    return broken


def _command_lines(page: Path) -> list[str]:
    """Lines of command blocks that start with `histosweep`, continuations joined."""
    lines = []
    for info, body in _split(page)[1]:
        if info in NOT_COMMANDS:
            continue
        text = "\n".join(body).replace("\\\n", " ")
        for line in text.split("\n"):
            line = re.sub(r"^\$ ", "", line.strip())
            if line.startswith("histosweep "):
                lines.append(re.split(r"\s#", line, maxsplit=1)[0])
    return lines


def _helps() -> dict[str, str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return {name: p.format_help() for name, p in sub.choices.items()}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page: Path) -> None:
    assert _links(page) or page.name != "README.md"
    assert _broken_links(page) == []


def test_the_link_check_catches_a_broken_file_and_anchor(tmp_path: Path) -> None:
    page = tmp_path / "a.md"
    (tmp_path / "b.md").write_text("# B page\n\n## Slurm: one worker (per GPU)\n")
    page.write_text("[ok](b.md#slurm-one-worker-per-gpu) [f](c.md) [a](b.md#slurm) `[x](y.md)`\n")
    assert _broken_links(page) == ["c.md (no such file)", "b.md#slurm (no heading #slurm in b.md)"]


def test_readme_links_every_docs_page() -> None:
    linked = {Path(t.partition("#")[0]).name for t in _links(ROOT / "README.md")}
    assert {p.name for p in PAGES[1:]} <= linked


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_documented_command_and_flag_exists(page: Path) -> None:
    helps = _helps()
    wrong = []
    for line in _command_lines(page):
        command = line.split()[1]
        if command not in helps:
            wrong.append(f"{line}: no subcommand {command!r}")
            continue
        wrong += [f"{line}: {command} has no {flag}" for flag in FLAG.findall(line)
                  if not re.search(re.escape(flag) + r"(?![\w-])", helps[command])]
    assert wrong == []


def test_the_command_check_reads_blocks_and_flags(tmp_path: Path) -> None:
    page = tmp_path / "a.md"
    page.write_text("```bash\nhistosweep worker S --n-trials 3 \\\n  --ntrials 2  # --x\n```\n"
                    "```text\nhistosweep not a command\n```\n")
    (line,) = _command_lines(page)
    assert line.split()[:2] == ["histosweep", "worker"] and "--x" not in line
    assert FLAG.findall(line) == ["--n-trials", "--ntrials"]
    assert "--ntrials" not in _helps()["worker"]
