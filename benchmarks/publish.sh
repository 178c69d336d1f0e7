#!/usr/bin/env bash
# Publish the asv dashboard so that it renders without a network (an air-gapped cluster,
# CI).  `asv publish` alone writes a page that loads jQuery, flot and Bootstrap from
# public CDNs; offline it shows only "One or more external (JavaScript) dependencies
# failed to load".  This script runs `asv publish`, then fetches the same libraries from
# the npm registry (`npm pack`, into an ignored cache; nothing is committed), copies them
# into the site's vendor/ folder and rewires the page to them (benchmarks/vendor_assets.py).
#
#   benchmarks/publish.sh                 # -> benchmarks/html/ (then: cd benchmarks && asv preview)
#   benchmarks/publish.sh -o DIR          # publish into DIR instead
#   benchmarks/publish.sh --fetch-only    # only fill the npm cache (CI does this before its tests)
#
# ASV_VENDOR_CACHE: the npm tarball cache (default benchmarks/.vendor-cache); a filled
# cache makes publishing itself offline.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/html"
fetch_only=0
while [ $# -gt 0 ]; do
    case "$1" in
        -o|--html-dir) out="$2"; shift 2 ;;
        --fetch-only) fetch_only=1; shift ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "publish.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

if [ "$fetch_only" = 1 ]; then
    exec python "$here/vendor_assets.py" fetch
fi

mkdir -p "$out"
out="$(cd "$out" && pwd)"
(cd "$here" && asv publish --html-dir "$out")
python "$here/vendor_assets.py" rewire "$out"
echo "publish.sh: offline dashboard in $out"
