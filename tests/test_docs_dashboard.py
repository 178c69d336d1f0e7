"""The asv dashboard from ``benchmarks/publish.sh`` renders with the network off.

``publish.sh`` runs ``asv publish`` and vendors asv's CDN assets (jQuery, flot, Bootstrap, ...)
from npm tarballs (``benchmarks/vendor_assets.py``).  Headless Chromium, with every host name
but 127.0.0.1 unresolvable and a dead proxy for anything else, loads the published site from
a local HTTP server; the DOM must show flot plots with data points and the graph legend.  As
a control, the page of a plain ``asv publish`` must fail in the same browser (so the
browser really is offline and the check can fail).

CI installs Chromium (apt) and fills the npm cache (``publish.sh --fetch-only``) before it
runs this file; elsewhere the browser tests skip, saying why, when Chromium is absent.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))
import vendor_assets  # noqa: E402

GRAPH = "bench_signal.Convolve2dSpeedup.track_speedup"
PROBE_ID = "fastconv-test-probe"
# Appended to a copy of index.html: every 250 ms it writes, into <pre id=PROBE_ID>, each flot
# plot on the page with its number of series and of finite data points (the canvas itself
# is not in the DOM).
PROBE = """<script>
setInterval(function () {
  var plots = [];
  $("div").each(function () {
    var plot = $(this).data("plot");
    if (!plot) return;
    var series = plot.getData(), points = 0;
    for (var i = 0; i < series.length; i++)
      for (var j = 0; j < series[i].data.length; j++) {
        var y = series[i].data[j][1];
        if (y !== null && isFinite(y)) points++;
      }
    plots.push({id: this.id, series: series.length, points: points});
  });
  var pre = document.getElementById("%s") || document.body.appendChild(document.createElement("pre"));
  pre.id = "%s";
  pre.textContent = JSON.stringify(plots);
}, 250);
</script>""" % (PROBE_ID, PROBE_ID)


def _chromium():
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _have_asv():
    try:
        import asv  # noqa: F401
    except ImportError:
        return False
    return True


needs_asv = pytest.mark.skipif(not _have_asv(), reason="asv is not installed (pip install 'fastconv[bench]')")
needs_chromium = pytest.mark.skipif(
    _chromium() is None, reason="Chromium is not installed (Debian: apt-get install chromium; CI installs it)")


def _cache_ready():
    cache = Path(os.environ.get("ASV_VENDOR_CACHE", vendor_assets.DEFAULT_CACHE))
    return all((cache / f"{p}-{v}.tgz").is_file() for p, v in vendor_assets.packages().items())


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    """(vendored site, plain asv site): both published from the committed results."""
    if not _cache_ready() and shutil.which("npm") is None:
        pytest.skip("npm is not installed and the npm asset cache is empty "
                    "(CI fills it: bash benchmarks/publish.sh --fetch-only)")
    root = tmp_path_factory.mktemp("asv")
    vendored, plain = root / "offline", root / "offline" / "plain"
    proc = subprocess.run(["bash", str(BENCH / "publish.sh"), "-o", str(vendored)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = subprocess.run([sys.executable, "-m", "asv", "publish", "--html-dir", str(plain)], cwd=BENCH,
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:  # older asv has no `python -m asv`
        proc = subprocess.run(["asv", "publish", "--html-dir", str(plain)], cwd=BENCH,
                              capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    index = (vendored / "index.html").read_text(encoding="utf-8")
    (vendored / "probe.html").write_text(index.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    return vendored, plain


@pytest.fixture(scope="module")
def server(sites):
    """A local HTTP server for the vendored site (the plain one is its subfolder plain/)."""
    handler = functools.partial(_QuietHandler, directory=str(sites[0]))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(10)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _dump_dom(url: str, tmp_path: Path) -> str:
    """The DOM of ``url`` after 15 s of virtual time, in Chromium with no network."""
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}",
           # offline: no name resolves except 127.0.0.1, and anything else goes to a dead proxy
           "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
           "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1",
           "--window-size=1280,900", "--virtual-time-budget=15000", "--dump-dom", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _rendered(url: str, tmp_path: Path):
    """(DOM, {plot id: {series, points}}) of a probe page that loaded without asv's error page."""
    dom = _dump_dom(url, tmp_path)
    assert "failed to load" not in dom
    m = re.search(r'<pre id="%s">(.*?)</pre>' % PROBE_ID, dom, re.S)
    assert m, "the probe never ran: the page's scripts did not load (DOM tail: %r)" % dom[-500:]
    plots = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    return dom, {p["id"]: p for p in plots}


# ---------------------------------------------------------------------------- no browser


def test_unknown_external_asset_is_refused(tmp_path):
    html = '<html><head><script src="https://cdn.example.org/lib/1.0/lib.min.js"></script></head></html>'
    with pytest.raises(vendor_assets.VendorError, match="cdn.example.org/lib/1.0/lib.min.js"):
        vendor_assets.rewire_html(html, tmp_path, tmp_path)


def test_external_refs_ignores_links_and_local_files():
    html = ('<script src="asv.js"></script><link href="asv.css" rel="stylesheet">'
            '<a href="https://github.com/airspeed-velocity/asv/">asv</a>'
            '<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/css/bootstrap.min.css">'
            "<script src='//code.jquery.com/jquery-3.3.1.min.js'></script>")
    assert vendor_assets.external_refs(html) == [
        "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/css/bootstrap.min.css",
        "//code.jquery.com/jquery-3.3.1.min.js"]


@needs_asv
def test_every_asv_asset_has_an_npm_source():
    """asv's own page template: each CDN tag maps to an npm file (a newer asv that loads
    something else fails here, not on a user's air-gapped machine)."""
    import asv
    template = (Path(asv.__file__).parent / "www" / "index.html").read_text(encoding="utf-8")
    refs = vendor_assets.external_refs(template)
    assert len(refs) >= 8
    for url in refs:
        assert vendor_assets._asset_for(url).url_tail in url


@needs_asv
def test_published_site_is_self_contained(sites):
    vendored, plain = sites
    assert vendor_assets.external_refs((plain / "index.html").read_text(encoding="utf-8")), \
        "plain asv publish no longer loads CDN assets: is this test still needed?"
    for page in vendored.glob("*.html"):
        assert vendor_assets.external_refs(page.read_text(encoding="utf-8")) == [], page
    index = (vendored / "index.html").read_text(encoding="utf-8")
    srcs = re.findall(r'(?:src|href)="(vendor/[^"]+)"', index)
    assert any("jquery.min.js" in s for s in srcs) and any("jquery.flot.js" in s for s in srcs)
    assert any("bootstrap.min.css" in s for s in srcs)
    for src in srcs:
        assert (vendored / src).stat().st_size > 1000, src
    assert "integrity=" not in index  # the CDN's hashes do not describe the npm files
    # Bootstrap's CSS finds its icon font next to it
    assert (vendored / "vendor/bootstrap-3.1.1/dist/fonts/glyphicons-halflings-regular.woff").is_file()
    assert (vendored / "graphs" / "summary" / f"{GRAPH}.json").is_file()


# ---------------------------------------------------------------------------- Chromium


@needs_asv
@needs_chromium
def test_plain_asv_page_fails_offline(server, tmp_path):
    """Control: without vendoring, this offline browser shows asv's failure page."""
    dom = _dump_dom(f"{server}/plain/index.html", tmp_path)
    assert "failed to load" in dom
    assert "flot-base" not in dom


@needs_asv
@needs_chromium
def test_summary_grid_renders_offline(server, tmp_path):
    _, plots = _rendered(f"{server}/probe.html", tmp_path)
    thumb = plots.get(f"summarygrid-{GRAPH}")
    assert thumb is not None, sorted(plots)
    assert thumb["series"] == 1 and thumb["points"] >= 2
    assert sum(p["points"] > 0 for p in plots.values()) >= 3


@needs_asv
@needs_chromium
def test_benchmark_graph_renders_series_offline(server, tmp_path):
    dom, plots = _rendered(f"{server}/probe.html#{GRAPH}", tmp_path)
    main = plots.get("main-graph")
    assert main is not None, sorted(plots)
    assert main["series"] >= 2 and main["points"] >= 2 * main["series"]
    # flot's own DOM: the canvas, axis tick labels and a legend row per series
    assert 'class="flot-base"' in dom and "flot-tick-label" in dom
    labels = re.findall(r'class="legendLabel">([^<]+)<', dom)
    assert len(labels) == main["series"]
    assert any("peer-scipy.signal.convolve2d" in label for label in labels), labels
