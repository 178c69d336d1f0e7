"""The documentation site builds with warnings as errors, and its pages hold what they should.

One ``sphinx-build -W -b html docs <tmp>`` (gallery included: it trains two U-Nets and a
CVAE, a few minutes on 2 cores, hence ``slow``; CI runs it on its own line of ``.ci/run``).
The checks read the generated HTML: the API page of ``fastconv.functional.conv2d`` lists
its parameters, every gallery example embeds its figures and printed its results, the
benchmark and user-guide pages have their build-time plots, and no page loads anything
from the network.
"""
from __future__ import annotations

import html
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(ROOT / "benchmarks"))
import vendor_assets  # noqa: E402

GALLERY = sorted(p.stem for p in (DOCS / "gallery").glob("plot_*.py"))


def _missing_docs_tools():
    missing = []
    for mod in ("sphinx", "numpydoc", "sphinx_gallery", "pydata_sphinx_theme", "matplotlib"):
        try:
            importlib.import_module(mod)
        except ImportError:
            missing.append(mod)
    return missing


pytestmark = pytest.mark.skipif(bool(_missing_docs_tools()),
                                reason=f"docs tools missing: {_missing_docs_tools()} (pip install 'fastconv[docs]')")


def _text(path: Path, sep: str = " ") -> str:
    """A page's visible text, roughly: tags replaced by ``sep`` (``""`` keeps highlighted code
    in one piece), entities decoded, spaces collapsed."""
    raw = path.read_text(encoding="utf-8")
    raw = re.sub(r"<(script|style)\b.*?</\1>", " ", raw, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", sep, raw)))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    prebuilt = os.environ.get("FASTCONV_DOCS_HTML")  # check an existing build instead (developing these tests)
    if prebuilt:
        return Path(prebuilt)
    out = tmp_path_factory.mktemp("docs") / "html"
    env = dict(os.environ, FASTCONV_DOCS_GALLERY="1", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", str(DOCS), str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    log = proc.stdout[-4000:] + proc.stderr[-8000:]
    assert proc.returncode == 0, f"sphinx-build -W failed:\n{log}"
    return out


@pytest.mark.slow
def test_build_has_every_section(site):
    for page in ["index", "getting_started", "benchmarks", "cuda_emulator", "api/index", "auto_examples/index",
                 "user_guide/index", "user_guide/conventions", "user_guide/geometry", "user_guide/ssim",
                 "user_guide/threads", "user_guide/devices", "user_guide/distributed", "user_guide/fusion"]:
        assert (site / f"{page}.html").is_file(), page
    start = _text(site / "getting_started.html", sep="")
    assert 'pip install torch==2.13.0 -e ".[all]" && fastconv train classifier' in start
    threads = _text(site / "user_guide/threads.html", sep="")
    assert "NUMBA_NUM_THREADS" in threads and "numba.set_num_threads" in threads and "NUMBA_CACHE_DIR" in threads
    assert "torchrun --standalone --nproc_per_node 2" in _text(site / "user_guide/distributed.html", sep="")
    assert "fiber" in _text(site / "cuda_emulator.html")
    fusion = _text(site / "user_guide/fusion.html", sep="")
    assert "PreActConvTranspose2d" in fusion and "fuse=True" in fusion and "in-place" in fusion


@pytest.mark.slow
def test_api_page_of_conv2d_lists_its_parameters(site):
    page = site / "generated" / "fastconv.functional.conv2d.html"
    assert page.is_file()
    raw = page.read_text(encoding="utf-8")
    # numpydoc turned the sections into a field list (not raw underlined headings) ...
    assert "----------" not in raw
    fields = re.findall(r'<dt class="field-(?:odd|even)">(\w+)', raw)
    assert fields[:3] == ["Parameters", "Returns", "Raises"], fields
    # ... whose Parameters entry names each parameter with its type
    params = raw[raw.index(">Parameters<"):raw.index(">Returns<")]
    listed = re.findall(r'<dt><strong>(\w+)</strong><span class="classifier">([^<]+)</span>', params)
    assert [p for p, _ in listed] == ["input", "weight", "bias", "stride", "padding", "dilation", "groups"]
    assert dict(listed)["input"] == "Tensor"
    assert "F.conv2d(x, w" in _text(page, sep="")          # the Examples section


@pytest.mark.slow
def test_api_reference_covers_every_public_name(site):
    import fastconv
    for module_name in ["fastconv.functional", "fastconv.nn", "fastconv.signal", "fastconv.filters",
                        "fastconv.models", "fastconv.fuse"]:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            assert (site / "generated" / f"{module_name}.{name}.html").is_file(), f"{module_name}.{name}"
    for name in ["convert_model", "ssim", "ms_ssim", "psnr"]:
        assert name in fastconv.__all__
        assert (site / "generated" / f"fastconv.{name}.html").is_file(), name
    assert "data_range" in _text(site / "generated" / "fastconv.ssim.html")
    # a class page documents the class, not torch.nn.Module's inherited methods
    unet = _text(site / "generated" / "fastconv.models.UNet.html")
    assert "skip" in unet and "register_forward_hook" not in unet


@pytest.mark.slow
def test_every_gallery_example_ran_and_embeds_its_figures(site):
    assert len(GALLERY) >= 7
    index = (site / "auto_examples" / "index.html").read_text(encoding="utf-8")
    for name in GALLERY:
        page = site / "auto_examples" / f"{name}.html"
        assert page.is_file(), name
        assert name in index
        raw = page.read_text(encoding="utf-8")
        figures = re.findall(rf'src="(\.\./_images/sphx_glr_{name}_\d+\.png)"', raw)
        assert figures, f"{name} embeds no figure"
        for src in figures:
            png = (page.parent / src).resolve()
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000, src
        # no Python warning leaked into the printed output
        assert not re.search(r"\w+Warning: ", _text(page)), f"{name} printed a warning"


@pytest.mark.slow
def test_gallery_outputs(site):
    def text(name):
        return _text(site / "auto_examples" / f"{name}.html")

    speed = text("plot_01_speed")
    assert "fastconv(ms)" in speed and "scipy(ms)" in speed and "xscipy" in speed
    gauss = text("plot_02_gaussian")
    assert "kernel (15, 15)" in gauss and "filter2d picks: separable" in gauss
    m = re.search(r"max \|fastconv - scipy.signal.convolve2d\| = ([0-9.e+-]+)", gauss)
    assert m and float(m.group(1)) < 1e-12
    ssim = text("plot_05_ssim_maps")
    means = re.findall(r"mean of the map ([0-9.]+), fastconv.ssim ([0-9.]+)", ssim)
    assert len(means) == 2 and all(a == b for a, b in means)
    assert float(means[1][0]) > float(means[0][0])           # denoising raised SSIM
    unet = text("plot_06_unet_skip")
    dice = dict(re.findall(r"skip=(True|False): test Dice ([0-9.]+)", unet))
    assert set(dice) == {"True", "False"} and float(dice["True"]) > 0.5
    cvae = text("plot_07_cvae_digits")
    assert re.search(r"validation SSIM 0\.[3-9]", cvae)


@pytest.mark.slow
def test_build_time_plots(site):
    for page, count in [("benchmarks", 4), ("user_guide/geometry", 1)]:
        raw = (site / f"{page}.html").read_text(encoding="utf-8")
        pngs = re.findall(r'<img[^>]+src="([^"]+\.png)"', raw)
        assert len(pngs) >= count, (page, pngs)
        for src in pngs:
            assert (site / page).parent.joinpath(src).resolve().is_file(), src


@pytest.mark.slow
def test_no_page_loads_from_the_network(site):
    """The site works offline: no <script>/<link> fetches from a CDN on any page."""
    pages = list(site.rglob("*.html"))
    assert len(pages) > 30
    offenders = {str(p.relative_to(site)): vendor_assets.external_refs(p.read_text(encoding="utf-8"))
                 for p in pages}
    assert {p: r for p, r in offenders.items() if r} == {}
