"""Every docstring example of the public modules runs, and the public API has examples to run.

The examples are what users read through ``help()`` and on the API pages, so they must be
correct: each module's docstrings go through the standard library's ``doctest`` (finder +
runner, ``NORMALIZE_WHITESPACE | ELLIPSIS``) and any failure fails the test with doctest's
report.  So that this cannot pass by finding nothing, the modules that define public
functions or classes must yield examples, and each name in :data:`REQUIRED` must have an
``Examples`` section with at least one example of its own.
"""
from __future__ import annotations

import doctest
import importlib
import importlib.util
import inspect
import io
import pkgutil
import warnings
from typing import List

import pytest

import fastconv

#: Modules scanned (the ones defining the public API, and the packages' own docstrings).
#: ``fastconv.dask.*`` joins them when dask is installed.
MODULES: List[str] = [
    "fastconv", "fastconv.functional", "fastconv.filters", "fastconv.signal", "fastconv.convert", "fastconv.fuse",
    "fastconv.models", "fastconv.nn", "fastconv.nn.modules", "fastconv.nn.fused", "fastconv.nn.ssim",
]


def _submodules(package: str, private: bool = True) -> List[str]:
    path = importlib.import_module(package).__path__
    return sorted(f"{package}.{m.name}" for m in pkgutil.iter_modules(path) if private or not m.name.startswith("_"))


MODULES += _submodules("fastconv.ops", private=False)
MODULES += ["fastconv.image"] + _submodules("fastconv.image")
HAVE_DASK = importlib.util.find_spec("dask") is not None
if HAVE_DASK:
    MODULES += ["fastconv.dask"] + _submodules("fastconv.dask")

#: Modules whose docstrings must yield examples (each defines public functions or classes).
MUST_HAVE_EXAMPLES = {
    "fastconv.filters", "fastconv.signal", "fastconv.convert", "fastconv.fuse", "fastconv.models",
    "fastconv.nn.modules", "fastconv.nn.fused", "fastconv.nn.ssim", "fastconv.ops.conv2d",
    "fastconv.ops.conv_transpose2d", "fastconv.ops.pool", "fastconv.ops.ssim", "fastconv.ops.fused",
    "fastconv.image.ssim",
} | ({"fastconv.dask.filters", "fastconv.dask.ssim"} if HAVE_DASK else set())

#: Public names (as users reach them) that must each carry at least one example of their own.
REQUIRED = (
    [f"fastconv.{n}" for n in ("convert_model", "ssim", "ms_ssim", "psnr")]
    + [f"fastconv.functional.{n}" for n in fastconv.functional.__all__]
    + [f"fastconv.nn.{n}" for n in fastconv.nn.__all__]
    + [f"fastconv.filters.{n}" for n in fastconv.filters.__all__ if n != "METHODS"]
    + [f"fastconv.signal.{n}" for n in fastconv.signal.__all__]
    + [f"fastconv.fuse.{n}" for n in ("fuse_model", "find_runs", "unfuse_batchnorm")]
    + [f"fastconv.models.{n}" for n in ("Classifier", "CifarNet", "UNet", "SegViT", "Denoiser", "VAE", "CVAE",
                                        "double_conv")]
)

OPTIONS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def _tests(module_name: str) -> List[doctest.DocTest]:
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    return [t for t in finder.find(module, module_name) if t.examples]


def _resolve(dotted: str):
    module_name, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module_name), name)


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_run(module_name):
    tests = _tests(module_name)
    if module_name in MUST_HAVE_EXAMPLES:
        assert sum(len(t.examples) for t in tests) > 0, f"{module_name}: no docstring examples found"
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    report = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        for test in tests:
            runner.run(test, out=report.write)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{module_name}: {result.failed} of {result.attempted} examples failed\n" \
                               f"{report.getvalue()}"


@pytest.mark.parametrize("dotted", REQUIRED)
def test_public_name_has_examples(dotted):
    obj = _resolve(dotted)
    doc = inspect.getdoc(obj) or ""
    assert "\nExamples\n--------\n" in f"\n{doc}", f"{dotted}: no numpydoc Examples section"
    assert doctest.DocTestParser().get_examples(doc), f"{dotted}: its Examples section has no >>> example"


def test_required_names_are_found_by_the_doctest_run():
    """Each required name's docstring is among the doctests the module test runs (not skipped
    because it is defined elsewhere than the scanned modules)."""
    found = set()
    for module_name in MODULES:
        for t in _tests(module_name):
            found.add(t.name)
    for dotted in REQUIRED:
        obj = _resolve(dotted)
        qual = f"{obj.__module__}.{obj.__qualname__}"
        assert qual in found, f"{dotted} ({qual}) is defined outside the scanned modules"
