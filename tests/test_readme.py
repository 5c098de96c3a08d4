"""The README's Python examples run as written."""
import re
from pathlib import Path

import matplotlib

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_examples_run():
    matplotlib.use("Agg")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 2
    namespace = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["mean"].shape == (5, 1)
    assert len(namespace["history"]) == 200
    assert namespace["history"].elbo[-1] > namespace["history"].elbo[0]
