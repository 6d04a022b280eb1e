"""The README is one session a new user pastes in order: run it against a live server.

Every ```sh block of README.md runs, top to bottom, in one bash script, but those marked with an
HTML comment `<!-- not run: ... -->` on the line before (the commands that start the service,
a deployment's settings, the test suite, the benchmark). `flask` commands act on the server's
own data. Each curl must answer a success, or the status its line's comment names (`# 409`): a
README whose examples rot fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import PROJECT
from live_server import LiveServer, serve

README = PROJECT / "README.md"
NOT_RUN = "<!-- not run:"
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.DOTALL | re.MULTILINE)
# A curl where a command starts: the line's start, `$(`, a pipe, `;` or `&&`.
CURL = re.compile(r"(^|\$\(|\|\s*|;\s*|&&\s*)curl ")
# The status a line's comment names: `# 409`, `# 201: ...`, `# 206, the first KB`.
EXPECTED = re.compile(r"\s*(\d{3})\b")
PRELUDE = r"""
set -euo pipefail
# check STATUS curl ARGS...: run curl, print what it answered, and stop the script unless the
# status is STATUS (2xx: any success).
check() {
    local expected=$1 out code
    shift 2
    out=$(command curl -sS -w '\n%{http_code}' "$@")
    code=${out##*$'\n'}
    printf '%s\n' "${out%$'\n'*}"
    if [[ $expected == 2xx && $code == 2?? ]] || [[ $code == "$expected" ]]; then
        return 0
    fi
    echo "README: expected $expected, got $code from: curl $*" >&2
    return 1
}
"""


# A live gunicorn, then every command of the README.
pytestmark = pytest.mark.slow


def session_blocks(text: str) -> list[tuple[int, str]]:
    """Return the line number and text of every ```sh block that the session runs."""
    blocks = []
    for match in BLOCK.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        if not before.startswith(NOT_RUN):
            blocks.append((text.count("\n", 0, match.start()) + 2, match.group(1)))
    return blocks


def checked(block: str) -> str:
    """Rewrite a block so that each curl checks the status its line expects."""
    lines = []
    for line in block.replace("\\\n", " ").splitlines():
        expected = EXPECTED.match(line.partition(" #")[2])
        status = expected.group(1) if expected else "2xx"
        lines.append(CURL.sub(lambda match, s=status: f"{match.group(1)}check {s} curl ", line))
    return "\n".join(lines)


def script(server: LiveServer) -> str:
    """Return the README session as one bash script aimed at the live server."""
    host = server.url.removeprefix("http://")
    parts = [PRELUDE]
    for line, block in session_blocks(README.read_text()):
        parts.append(f"echo '--- README.md line {line}' >&2\n{checked(block)}")
    return "\n".join(parts).replace("127.0.0.1:8000", host)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server on a fresh database with no user: the README creates its own."""
    with serve(tmp_path_factory.mktemp("readme"), users=False) as server:
        yield server


def test_the_readme_runs_top_to_bottom(server: LiveServer, tmp_path: Path) -> None:
    """A new user pastes every example of the README, in order."""
    (tmp_path / ".venv").symlink_to(sys.prefix)  # the README runs `.venv/bin/...`: this venv
    (tmp_path / "README.md").symlink_to(README)  # an example uploads it, as a file that is no image
    path = tmp_path / "readme.sh"
    path.write_text(script(server))

    result = subprocess.run(
        ["bash", str(path)],
        cwd=tmp_path,
        # A new user's home: no ~/.netrc of the machine's, and a checksum cache of the test's own.
        env=server.env
        | {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "XDG_CACHE_HOME": str(tmp_path / ".cache"),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, (
        f"{result.stderr[-4000:]}\n--- server log ---\n{server.log_tail()}"
    )


def test_the_session_runs_every_kind_of_example() -> None:
    """The session covers the walk-through: users, tags, images, tokens and trackings."""
    text = "\n".join(block for _, block in session_blocks(README.read_text()))

    for expected in ("users create alice", "/tags/", "/images/", "/tokens/", "/trackings/"):
        assert expected in text
    assert "make run" not in text
