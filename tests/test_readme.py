"""The README's DataFrame example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _block_after(heading):
    text = README.read_text()
    section = text[text.index(heading) :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_dataframe_example_runs(capsys):
    namespace = {}
    exec(compile(_block_after("## DataFrames in, names out"), "README.md", "exec"), namespace)
    top = namespace["top_features"](namespace["model"], n=10)
    assert list(top.columns) == ["field", "value", "weight", "count", "column", "collisions"]
    assert len(top) == 10 and namespace["proba"].shape == (20_000,)
    assert "weight" in capsys.readouterr().out
