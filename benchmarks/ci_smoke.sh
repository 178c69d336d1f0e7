#!/usr/bin/env bash
# CI smoke test of the asv suite: fails (non-zero) if any benchmark fails to import,
# set up or run.  Uses the installed project (`pip install -e .` first) through
# `--python=same`, a throw-away machine name and a temporary copy of asv.conf.json
# whose results/html directories live in a temp dir, so benchmarks/results/ (the
# committed results) is never touched.  Takes well under 3 minutes on 2 cores.
#
#   benchmarks/ci_smoke.sh            # default subset
#   ASV_SMOKE_BENCH='bench_ssim' benchmarks/ci_smoke.sh   # another -b regex
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# One benchmark (all parameters) from each module, each a few seconds with --quick.
bench="${ASV_SMOKE_BENCH:-PeakMemConv|bench_ssim\.SSIMForward\.|bench_train\.TrainStepRatio|bench_overhead\.CallOverheadRatio|bench_layers\.WinogradError}"

python - "$here" "$tmp" <<'PY'
import json, os, sys
from asv.util import load_json
here, tmp = sys.argv[1], sys.argv[2]
conf = load_json(os.path.join(here, "asv.conf.json"), js_comments=True)
conf["repo"] = os.path.normpath(os.path.join(here, conf.get("repo", "..")))
conf["benchmark_dir"] = os.path.join(here, conf.get("benchmark_dir", "benchmarks"))
conf["results_dir"] = os.path.join(tmp, "results")
conf["html_dir"] = os.path.join(tmp, "html")
conf["env_dir"] = os.path.join(tmp, "env")
with open(os.path.join(tmp, "asv.conf.json"), "w") as f:
    json.dump(conf, f, indent=2)
PY

cd "$tmp"
asv machine --config "$tmp/asv.conf.json" --yes --machine ci-smoke >/dev/null
asv check --config "$tmp/asv.conf.json" --python=same

set +e
asv run --config "$tmp/asv.conf.json" --python=same --quick --dry-run --machine ci-smoke \
    --show-stderr -b "$bench" 2>&1 | tee "$tmp/run.log"
rc=${PIPESTATUS[0]}
set -e
# asv exits 2 when a benchmark failed; also refuse a run that selected nothing.
if [ "$rc" -ne 0 ] || grep -qE '(^|[^a-z])failed($|[^a-z])' "$tmp/run.log"; then
    echo "ci_smoke: asv benchmarks failed (asv exit code $rc)" >&2
    exit 1
fi
if ! grep -q ' ok' "$tmp/run.log"; then
    echo "ci_smoke: no benchmark ran (regex: $bench)" >&2
    exit 1
fi
echo "ci_smoke: OK"
