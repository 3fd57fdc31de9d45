"""README.md followed literally: every python block runs as written, every ``sparseopt``
command line of its bash blocks parses, and the DataFrame example answers what it says."""

import re
import shlex
from pathlib import Path

import pytest

from sparseopt.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text()


def _blocks(language):
    """(first line number, code) of each fenced block of ``language``."""
    return [
        (TEXT[: m.start()].count("\n") + 2, m.group(1))
        for m in re.finditer(rf"```{language}\n(.*?)```", TEXT, re.S)
    ]


PYTHON = _blocks("python")


def _heading(line):
    """The section heading above README line ``line``."""
    above = TEXT.splitlines()[:line]
    return next(h for h in reversed(above) if h.startswith("#")).lstrip("# ")


@pytest.fixture
def run_block(tmp_path, monkeypatch):
    """exec a block in a fresh namespace, in an empty folder, with a private data home."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPARSEOPT_DATA", str(tmp_path / "data_home"))
    opened = []

    def run(line, code):
        namespace = {}
        opened.append(namespace)
        exec(compile(code, f"README.md, line {line}", "exec"), namespace)
        return namespace

    yield run
    for namespace in opened:  # clients the examples start
        client = namespace.get("client")
        if client is not None:
            client.close()


def test_every_python_block_is_run():
    headings = [_heading(line) for line, _ in PYTHON]
    assert len(PYTHON) >= 4, headings
    assert len(PYTHON) == len(set(headings)), "two blocks under one heading: name them apart"


@pytest.mark.parametrize(("line", "code"), PYTHON, ids=[_heading(line) for line, _ in PYTHON])
def test_python_block_runs_as_written(run_block, capsys, line, code):
    namespace = run_block(line, code)
    heading = _heading(line)
    if heading.startswith("DataFrames in, names out"):
        top = namespace["top_features"](namespace["model"], n=10)
        assert list(top.columns) == ["field", "value", "weight", "count", "column", "collisions"]
        assert len(top) == 10 and namespace["proba"].shape == (20_000,)
        assert "weight" in capsys.readouterr().out
    elif heading.startswith("Optimizers on their own"):
        # what the comments say: repeated indices summed, then caught up like dense Adam
        params = namespace["params"]
        assert params[3] < 0 < params[17] and params[999_999] < 0 and params[0] == 0
    elif heading.startswith("Past one machine"):
        assert namespace["proba"].shape[1] == 2


def _command_lines():
    """Every ``sparseopt ...`` command of the bash blocks (continuations joined, comments
    dropped), with each ``[optional part]`` both left out and given; ``...`` stands for the
    options of the line above it and is dropped."""
    commands = []
    for line, code in _blocks("bash"):
        joined = re.sub(r"\\\n\s*", " ", code)
        for text in joined.splitlines():
            text = text.split("#")[0]
            for part in text.split("&&"):
                part = part.strip()
                if not part.startswith("sparseopt"):
                    continue
                part = part.replace("...", " ")
                optional = re.findall(r"\[([^\]]*)\]", part)
                bare = re.sub(r"\[[^\]]*\]", " ", part)
                full = re.sub(r"\[([^\]]*)\]", r"\1", part)
                commands += [(line, bare)] + ([(line, full)] if optional else [])
    return commands


COMMANDS = _command_lines()


def test_the_bash_blocks_hold_the_commands():
    names = {shlex.split(c)[1] for _, c in COMMANDS if len(shlex.split(c)) > 1}
    assert {"train", "predict", "evaluate", "recommend", "inspect", "cache"} <= names


@pytest.mark.parametrize(("line", "command"), COMMANDS, ids=[c for _, c in COMMANDS])
def test_command_line_parses(line, command):
    parser = build_parser()
    try:
        parser.parse_args(shlex.split(command)[1:])
    except SystemExit as exc:  # argparse exits on an unknown option or value
        pytest.fail(f"README.md line {line}: {command!r} does not parse (exit {exc.code})")


def test_make_ctr_as_frame_is_what_the_readme_says():
    from sklearn.utils import Bunch

    from sparseopt.datasets import make_ctr

    assert "returns a scikit-learn `Bunch` whose `frame`" in " ".join(TEXT.split())
    data = make_ctr(500, n_planted=10, as_frame=True, random_state=0)
    assert isinstance(data, Bunch) and list(data.frame.columns[:2]) == ["f0", "f1"]
    assert data.frame.shape[0] == data.y.shape[0] == 500
    strength = abs(data.planted_weights)
    assert len(data.planted_fields) == 10 and (strength[:-1] >= strength[1:]).all()
