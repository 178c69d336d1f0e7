"""Make an ``asv publish`` dashboard render without a network.

asv's ``index.html`` loads jQuery, flot (and three of its plugins), flot-orderbars,
stupidtable, blueimp-md5 and Bootstrap 3 from public CDNs.  Offline, every one of those
``<script>`` tags fails and the page redirects to ``error.html`` ("One or more external
(JavaScript) dependencies failed to load").  This script

1. ``fetch``: downloads the npm packages that hold the same files (``npm pack``, from the
   npm registry, at publish time) into a cache folder -- nothing is committed;
2. ``rewire HTML_DIR``: copies the needed files out of those tarballs into
   ``HTML_DIR/vendor/<package>-<version>/`` and points the page's tags at them.

Every external ``<script src>`` / ``<link href>`` in the published pages must have an
entry in :data:`ASSETS`; an unknown one (a newer asv that loads something else) is an
error that names it, so a page that would still reach out to a CDN is never published.
``benchmarks/publish.sh`` runs both steps after ``asv publish``.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = HERE / ".vendor-cache"


class Asset(NamedTuple):
    """One CDN file of asv's page and where the same code lives on npm."""
    url_tail: str          # the CDN URL ends with this
    package: str           # npm package name
    version: str           # npm version
    path: str              # file inside the package (the tarball's ``package/`` prefix left out)
    extra: tuple = ()      # further files the asset needs next to it (e.g. Bootstrap's fonts)


_GLYPHS = tuple(f"dist/fonts/glyphicons-halflings-regular.{ext}" for ext in ("eot", "svg", "ttf", "woff"))

#: asv 0.6's CDN assets.  flot 0.8.3 is on npm unminified only; stupidtable 1.0.1 is not on
#: npm, 1.1.3 (same ``$.fn.stupidtable`` API) is.
ASSETS: List[Asset] = [
    Asset("jquery-3.3.1.min.js", "jquery", "3.3.1", "dist/jquery.min.js"),
    Asset("flot/0.8.3/jquery.flot.min.js", "flot", "0.8.3", "jquery.flot.js"),
    Asset("flot/0.8.3/jquery.flot.time.min.js", "flot", "0.8.3", "jquery.flot.time.js"),
    Asset("flot/0.8.3/jquery.flot.selection.min.js", "flot", "0.8.3", "jquery.flot.selection.js"),
    Asset("flot/0.8.3/jquery.flot.categories.min.js", "flot", "0.8.3", "jquery.flot.categories.js"),
    Asset("flot-orderbars@1.0.0/js/jquery.flot.orderBars.js", "flot-orderbars", "1.0.0",
          "js/jquery.flot.orderBars.js"),
    Asset("stupidtable/1.0.1/stupidtable.min.js", "stupid-table-plugin", "1.1.3", "stupidtable.min.js"),
    Asset("blueimp-md5/2.19.0/js/md5.min.js", "blueimp-md5", "2.19.0", "js/md5.min.js"),
    Asset("bootstrap@3.1.1/dist/js/bootstrap.min.js", "bootstrap", "3.1.1", "dist/js/bootstrap.min.js"),
    Asset("bootstrap@3.1.1/dist/css/bootstrap.min.css", "bootstrap", "3.1.1", "dist/css/bootstrap.min.css",
          _GLYPHS),
]

# <script ... src="http..."> and <link ... href="http...">: the tags a browser fetches
# while loading the page (plain <a href> links are navigation, not dependencies).
_TAG = re.compile(r"<(script|link)\b[^>]*>", re.IGNORECASE)
_URL_ATTR = re.compile(r"""\b(src|href)\s*=\s*(["'])(https?:)?//([^"']+)\2""", re.IGNORECASE)
_DROP_ATTRS = re.compile(r"""\s+(integrity|crossorigin|referrerpolicy)(\s*=\s*(["'])[^"']*\3)?""", re.IGNORECASE)


class VendorError(RuntimeError):
    pass


def _tarball(cache: Path, package: str, version: str) -> Path:
    return cache / f"{package}-{version}.tgz"


def packages() -> Dict[str, str]:
    """``{package: version}`` of every npm package :data:`ASSETS` needs."""
    return {a.package: a.version for a in ASSETS}


def fetch(cache: Path = DEFAULT_CACHE, npm: Optional[str] = None) -> List[Path]:
    """``npm pack`` each needed package into ``cache`` (skipping tarballs already there)."""
    cache.mkdir(parents=True, exist_ok=True)
    missing = [(p, v) for p, v in packages().items() if not _tarball(cache, p, v).is_file()]
    if missing:
        npm = npm or shutil.which("npm")
        if npm is None:
            raise VendorError("npm is not installed, and the asset cache "
                              f"{cache} lacks {', '.join(f'{p}@{v}' for p, v in missing)}")
        specs = [f"{p}@{v}" for p, v in missing]
        print(f"vendor_assets: npm pack {' '.join(specs)} -> {cache}", file=sys.stderr)
        proc = subprocess.run([npm, "pack", "--silent", "--pack-destination", str(cache), *specs],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise VendorError(f"npm pack failed ({proc.returncode}):\n{proc.stderr.strip()}")
        # npm names a tarball <name>-<version>.tgz; check each arrived under that name
        for p, v in missing:
            if not _tarball(cache, p, v).is_file():
                raise VendorError(f"npm pack did not write {_tarball(cache, p, v)}")
    return [_tarball(cache, p, v) for p, v in packages().items()]


def _extract(tgz: Path, member: str, dest: Path) -> None:
    with tarfile.open(tgz, "r:gz") as tf:
        try:
            info = tf.getmember(f"package/{member}")
        except KeyError:
            raise VendorError(f"{tgz.name} has no file {member}") from None
        if not info.isfile():
            raise VendorError(f"{tgz.name}: {member} is not a regular file")
        data = tf.extractfile(info).read()
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)


def _asset_for(url: str) -> Asset:
    for asset in ASSETS:
        if url.endswith(asset.url_tail):
            return asset
    raise VendorError(f"the page loads {url} from the network and vendor_assets.py has no npm "
                      "source for it: add an entry to ASSETS")


def external_refs(html: str) -> List[str]:
    """The network URLs that ``<script src>`` and ``<link href>`` tags of ``html`` load."""
    refs = []
    for tag in _TAG.finditer(html):
        m = _URL_ATTR.search(tag.group(0))
        if m:
            refs.append(f"{m.group(3) or ''}//{m.group(4)}")
    return refs


def rewire_html(html: str, cache: Path, html_dir: Path) -> str:
    """Copy each external asset of ``html`` into ``html_dir/vendor`` and point its tag there."""
    def replace(tag_match: re.Match) -> str:
        tag = tag_match.group(0)
        m = _URL_ATTR.search(tag)
        if not m:
            return tag
        asset = _asset_for(f"{m.group(3) or ''}//{m.group(4)}")
        folder = f"vendor/{asset.package}-{asset.version}"
        tgz = _tarball(cache, asset.package, asset.version)
        if not tgz.is_file():
            raise VendorError(f"{tgz} is missing: run `{Path(__file__).name} fetch` first")
        for member in (asset.path, *asset.extra):
            _extract(tgz, member, html_dir / folder / member)
        local = f'{m.group(1)}="{folder}/{asset.path}"'
        # the CDN's SRI hashes describe the CDN's (minified) builds, not these files
        return _DROP_ATTRS.sub("", tag[:m.start()] + local + tag[m.end():])

    return _TAG.sub(replace, html)


def rewire(html_dir: Path, cache: Path = DEFAULT_CACHE) -> List[Path]:
    """Rewire every ``*.html`` of a published asv site; returns the files changed."""
    changed = []
    for page in sorted(html_dir.glob("*.html")):
        text = page.read_text(encoding="utf-8")
        new = rewire_html(text, cache, html_dir)
        left = external_refs(new)
        if left:  # pragma: no cover - rewire_html raises first
            raise VendorError(f"{page} still loads {left}")
        if new != text:
            page.write_text(new, encoding="utf-8")
            changed.append(page)
    if not (html_dir / "index.html").is_file():
        raise VendorError(f"{html_dir} has no index.html: run asv publish first")
    return changed


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, default=Path(os.environ.get("ASV_VENDOR_CACHE", DEFAULT_CACHE)),
                   help="folder for the npm tarballs (default: $ASV_VENDOR_CACHE or benchmarks/.vendor-cache)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fetch", help="npm pack the needed packages into the cache")
    rw = sub.add_parser("rewire", help="vendor the assets into a published site and rewire its pages")
    rw.add_argument("html_dir", type=Path)
    args = p.parse_args(argv)
    try:
        if args.cmd == "fetch":
            for tgz in fetch(args.cache):
                print(tgz)
        else:
            fetch(args.cache)
            for page in rewire(args.html_dir, args.cache):
                print(f"vendor_assets: rewired {page}")
    except VendorError as e:
        print(f"vendor_assets: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
