"""The documentation builds with Sphinx, warnings as errors (what ``make docs`` runs)."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _missing_docs_extras():
    return [m for m in ("sphinx", "myst_parser") if importlib.util.find_spec(m) is None]


@pytest.mark.skipif(
    bool(_missing_docs_extras()),
    reason=f"docs extras not installed ({', '.join(_missing_docs_extras())}): "
    "pip install -e '.[docs]' or run `make docs`",
)
def test_docs_build_without_warnings(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    # with -W any Sphinx warning makes the build fail; TensorFlow's own start-up lines are ignored
    problems = [line for line in result.stderr.splitlines()
                if ("WARNING:" in line or "ERROR:" in line) and "absl::InitializeLog" not in line]
    assert result.returncode == 0, "\n".join(problems) or result.stderr[-3000:]
    html = tmp_path / "html"
    for page in ("index", "getting_started", "theory", "guide", "notebooks", "api"):
        assert (html / f"{page}.html").exists(), f"{page}.html was not built"
    if (DOCS / "reproduction.md").exists():
        assert (html / "reproduction.html").exists()


def test_every_public_name_is_in_the_api_reference():
    import gpnat

    api = (DOCS / "api.rst").read_text(encoding="utf-8")
    for name in gpnat.__all__:
        assert f"gpnat.{name}" in api, f"gpnat.{name} is not in docs/api.rst"
    for module in ("gaussian", "parametrisations", "variational", "natgrad", "schedules",
                   "training", "experiments.datasets"):
        assert f"automodule:: gpnat.{module}" in api
