"""Sphinx configuration for gpnat's documentation (``make docs``).

The build never executes notebooks: the notebooks page links to the committed,
executed ``.ipynb`` files. ``reproduction.md`` (the report of the reproduction
of Salimbeni et al., 2018) is added to the table of contents only if it exists.
"""
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # autodoc imports TensorFlow

import gpnat  # noqa: E402

project = "gpnat"
author = "the gpnat developers"
copyright = "2026, the gpnat developers"
version = release = gpnat.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "alabaster"
html_title = f"gpnat {release}"
html_theme_options = {"description": "Gaussian processes trained with natural gradients", "fixed_sidebar": True}

#: the reproduction report is written separately; list it only when it is there
REPRODUCTION = HERE / "reproduction.md"
TOCTREE_MARKER = "<!-- reproduction -->"


def _add_reproduction(app, docname, source):
    if docname == "index":
        entry = "reproduction\n" if REPRODUCTION.exists() else ""
        source[0] = source[0].replace(TOCTREE_MARKER + "\n", entry)


def _resolve_top_level_name(app, env, node, contnode):
    """Let ``gpnat.SVGP`` (a name in ``gpnat.__all__``) link to ``gpnat.models.svgp.SVGP``."""
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith("gpnat."):
        return None
    head, _, rest = target[len("gpnat."):].partition(".")
    obj = getattr(gpnat, head, None) if head in gpnat.__all__ else None
    module = getattr(obj, "__module__", None)
    if module is None or module == "gpnat":
        return None
    full = ".".join(filter(None, [module, obj.__qualname__, rest]))
    return env.get_domain("py").resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], full, node, contnode
    )


def setup(app):
    app.connect("source-read", _add_reproduction)
    app.connect("missing-reference", _resolve_top_level_name)
