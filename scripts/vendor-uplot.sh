#!/usr/bin/env bash
# Vendors the dashboard's charting library, uPlot, from its npm package:
# fetches the pinned version with npm and copies the built browser files and
# the licence into core/src/net/dashboard/assets/vendor/, where the core
# embeds them (the dashboard must work offline: no CDN). Run it to move to
# another version, then commit the files it wrote.
#
#   bash scripts/vendor-uplot.sh [VERSION]
set -euo pipefail
version="${1:-1.6.32}"
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/core/src/net/dashboard/assets/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "uplot@$version" >/dev/null)
tar -xzf "$work"/uplot-"$version".tgz -C "$work"
package="$work/package"
mkdir -p "$dest"
cp "$package/dist/uPlot.iife.min.js" "$dest/uPlot.iife.min.js"
cp "$package/dist/uPlot.min.css" "$dest/uPlot.min.css"
cp "$package/LICENSE" "$dest/uPlot.LICENSE"
printf 'uPlot %s, from the npm package uplot@%s (MIT; see uPlot.LICENSE).\n' "$version" "$version" >"$dest/VERSION"
echo "vendored uPlot $version into ${dest#"$root"/}"
