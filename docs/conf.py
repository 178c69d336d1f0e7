"""Sphinx configuration of the fastconv documentation.

Build (from the repository root)::

    pip install torch==2.13.0 -e ".[docs]"
    sphinx-build -W -b html docs docs/_build/html

``FASTCONV_DOCS_GALLERY=0`` skips running the gallery examples (a quick build of the prose
and the API reference).  Everything is built offline: the gallery uses scikit-image's and
scikit-learn's bundled data, the benchmark plots read ``benchmarks/results/``, and the theme
ships its own assets (no intersphinx, no MathJax).
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# This checkout's fastconv (and docs/_scripts for the build-time figures) come first.
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS / "_scripts"))
os.environ.setdefault("MPLBACKEND", "Agg")

import fastconv  # noqa: E402

project = "fastconv"
author = "the fastconv developers"
copyright = "the fastconv developers, BSD-3-Clause"
release = version = fastconv.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "matplotlib.sphinxext.plot_directive",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "gallery", "**.ipynb_checkpoints"]
root_doc = "index"
default_role = "literal"   # `x` in prose is code, not an unresolved cross-reference

# --------------------------------------------------------------------------- API reference
# The API pages are generated here from each module's ``__all__`` (docs/api/, not committed),
# so a newly exported function or class is documented without touching the docs.  Each
# object gets its own page (autosummary stubs in docs/generated/); classes document their
# own members only, not the ~60 inherited from torch.nn.Module.

#: (module, title, what to skip from ``__all__``): the public API, in the order shown
API_MODULES = [
    ("fastconv", "fastconv (top level)", {"functional", "nn", "signal", "filters"}),
    ("fastconv.functional", "fastconv.functional", set()),
    ("fastconv.nn", "fastconv.nn", set()),
    ("fastconv.signal", "fastconv.signal", set()),
    ("fastconv.filters", "fastconv.filters", set()),
    ("fastconv.models", "fastconv.models", set()),
    ("fastconv.fuse", "fastconv.fuse", set()),
]


def _public_names(module_name: str, skip: set) -> list:
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:  # no __all__: the public callables and classes defined there
        names = [n for n, v in vars(module).items()
                 if not n.startswith("_") and callable(v) and getattr(v, "__module__", "") == module_name]
    out = []
    for name in names:
        obj = getattr(module, name, None)
        if name in skip or obj is None or type(obj).__name__ == "module":
            continue
        out.append(name)
    return out


def write_api_pages() -> None:
    """docs/api/index.rst and one page per module (rewritten only when they change)."""
    api = DOCS / "api"
    api.mkdir(exist_ok=True)
    pages = {}
    for module_name, title, skip in API_MODULES:
        slug = module_name.replace(".", "_")
        names = _public_names(module_name, skip)
        lines = [f".. _api-{slug}:", "", title, "=" * len(title), "",
                 f".. automodule:: {module_name}", "   :no-members:", "", f".. currentmodule:: {module_name}", "",
                 ".. autosummary::", "   :toctree: ../generated", "   :nosignatures:", ""]
        lines += [f"   {n}" for n in names] + [""]
        pages[f"{slug}.rst"] = "\n".join(lines)
    index = ["API reference", "=============", "",
             "Generated from the docstrings (numpydoc format) of the public modules; every name in a",
             "module's ``__all__`` is listed.", "", ".. toctree::", "   :maxdepth: 1", ""]
    index += [f"   {m.replace('.', '_')}" for m, _, _ in API_MODULES] + [""]
    pages["index.rst"] = "\n".join(index)
    for name, text in pages.items():
        path = api / name
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
    for stale in api.glob("*.rst"):
        if stale.name not in pages:
            stale.unlink()


write_api_pages()

autosummary_generate = True
autodoc_default_options = {"show-inheritance": True}
autodoc_typehints = "none"          # the numpydoc "Parameters" sections carry the types
autodoc_member_order = "bysource"
autodoc_mock_imports = ["cupy"]     # the CUDA launchers import without CuPy too
# A method without its own docstring (e.g. a torch.nn layer's ``forward``) is left out rather
# than shown with torch's docstring, which is not numpydoc and breaks a -W build.
autodoc_inherit_docstrings = False

numpydoc_show_class_members = False  # the class template lists members (own members only)
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set = set()
numpydoc_use_plots = False

# --------------------------------------------------------------------------- gallery
_run_gallery = os.environ.get("FASTCONV_DOCS_GALLERY", "1").lower() not in ("0", "false", "no")

sphinx_gallery_conf = {
    "examples_dirs": "gallery",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"plot_",
    "within_subsection_order": "FileNameSortKey",
    "plot_gallery": _run_gallery,
    "abort_on_example_error": True,
    "download_all_examples": False,
    "remove_config_comments": True,
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib", "gallery_setup.quiet_compiler_pedantry"),
    "min_reported_time": 0,
    "show_memory": False,
    "show_signature": False,
    "backreferences_dir": None,
    # the timing tables load DataTables and Bootstrap from CDNs; each example page shows its time
    "write_computation_times": False,
}

# --------------------------------------------------------------------------- plot directive
plot_include_source = False
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 110)]
plot_rcparams = {"figure.autolayout": True}

# --------------------------------------------------------------------------- HTML
html_theme = "pydata_sphinx_theme"
html_title = f"fastconv {release}"
html_static_path: list = []
html_show_sourcelink = False
html_theme_options = {
    "navigation_with_keys": False,
    "show_prev_next": True,
    "header_links_before_dropdown": 7,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_sidebars = {"index": [], "getting_started": []}
