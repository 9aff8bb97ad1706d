"""The README's command blocks run as written, so the README cannot drift from the program.

Every `ticketlab ...` line of its ```sh blocks runs through main() in order, in one runs
directory; a line that would take long runs with the settings SHORTER gives it (each must
still match the README, or this test fails). `make` lines are CI's own command. Each
```python block runs as written.
"""

import re
import shlex
from pathlib import Path

import pytest

from ticketlab.cli import main

README = Path(__file__).parents[1] / "README.md"

# Lines that take long as written: (the line's start, the words replaced, their replacement).
SHORTER = [("ticketlab earlybird", "--epochs 10", "--epochs 2")]


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def commands() -> list[tuple[list[str], str | None]]:
    """Each command's words, and the run name its comment says it makes (`# run train-…`), if any."""
    lines = [line for block in blocks("sh") for line in block.splitlines() if line.startswith("ticketlab ")]
    used = set()
    for i, line in enumerate(lines):
        for start, old, new in SHORTER:
            if line.startswith(start) and old in line:
                lines[i] = line.replace(old, new)
                used.add(start)
    assert used == {start for start, _, _ in SHORTER}, "a SHORTER entry no longer matches the README"
    return [(shlex.split(line, comments=True)[1:], (re.findall(r"# run (\S+)", line) or [None])[0]) for line in lines]


def test_the_readme_has_a_command_for_every_command_of_the_program():
    from ticketlab.cli import build_parser

    parser = build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    shown = {words[0] for words, _ in commands()} | {"run"}  # `run` is the README's first line, `make run`
    assert set(subcommands) <= shown, set(subcommands) - shown


def test_every_readme_command_block_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for words, makes in commands():
        code = main([*words, "--quiet"] if words[0] not in ("runs", "criteria", "models", "presets") else words)
        out = capsys.readouterr()
        assert code == 0, f"`ticketlab {shlex.join(words)}` failed: {out.err}"
        if makes is not None:  # the README names the run, and later lines use the name: hashes are pinned here
            assert makes in out.out, (words, out.out)
    listing = main(["runs"])
    assert listing == 0
    assert "corrupt" not in capsys.readouterr().out


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_every_readme_python_block_runs_as_written(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks("python")[index], f"README.md python block {index}", "exec"), {})
    assert capsys.readouterr().out.strip()
