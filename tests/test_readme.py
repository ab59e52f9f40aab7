"""The README's Python examples run as written."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(path: Path) -> list[str]:
    """The ```python blocks of a Markdown file, in order (the other test files that run a page's
    examples use it too)."""
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


BLOCKS = python_blocks(README)


def test_the_readme_has_python_examples():
    assert BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, capsys):
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), {"__name__": "readme"})
