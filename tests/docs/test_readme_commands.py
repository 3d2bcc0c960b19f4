"""Every `tomoformer ...` line in a bash block of README.md and docs/*.md parses with the CLI's own parser: a
renamed or removed flag cannot linger in the documentation."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tomoformer.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def expand(line: str, variables: dict[str, str]) -> str:
    """``line`` with each command substitution ``$(...)`` replaced by one word (what it prints is a path) and
    ``$NAME`` / ``${NAME}`` by the block's value of NAME (others left as they are)."""
    while (start := line.find("$(")) >= 0:
        depth, end = 0, start + 1
        for end in range(start + 1, len(line)):
            depth += {"(": 1, ")": -1}.get(line[end], 0)
            if depth == 0:
                break
        line = f"{line[:start]}SUBSTITUTED{line[end + 1 :]}"
    return re.sub(r"\$\{?([A-Z_]+)\}?", lambda m: variables.get(m[1], m[0]), line)


def documented_commands() -> list[tuple[str, str]]:
    """(page, command) for each `tomoformer` command in a ```bash block; continuation lines joined, comments cut."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S):
            variables: dict[str, str] = {}
            for line in block.replace("\\\n", " ").splitlines():
                line = expand(line, variables)
                assignment = re.fullmatch(r"\s*([A-Z_]+)=(.*)", line.split("#", 1)[0])
                if assignment:  # NAME="..." set earlier in the block and used as $NAME
                    variables[assignment[1]] = " ".join(shlex.split(assignment[2]))
                    continue
                for part in line.split("#", 1)[0].split("&&"):
                    words = shlex.split(part)
                    if words[:1] == ["tomoformer"]:
                        found.append((page.name, part.strip()))
    return found


COMMANDS = documented_commands()


def test_the_pages_document_commands() -> None:
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize(("page", "command"), COMMANDS, ids=[f"{p}:{c[:60]}" for p, c in COMMANDS])
def test_documented_command_parses(page: str, command: str) -> None:
    words = shlex.split(command)[1:]
    try:
        build_parser().parse_args(words)
    except SystemExit as exit_:
        pytest.fail(f"{page}: `{command}` does not parse (exit {exit_.code})")
