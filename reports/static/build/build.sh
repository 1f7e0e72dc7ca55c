#!/usr/bin/env bash
# Rebuilds reports/static/plotly-videosweep.min.js, the partial plotly.js that report.html inlines (scatter and
# parcoords only). Needs node and npm (and the npm registry); works in a scratch folder outside the repository.
# The plotly.js version must be the one the installed Python plotly package bundles:
#   python -c "import plotly.offline; print(plotly.offline.get_plotlyjs_version())"
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cp "$here/package.json" "$here/entry.js" "$scratch/"
cd "$scratch"
npm install --no-audit --no-fund --silent
version="$(node -p "require('plotly.js/package.json').version")"
npx esbuild entry.js --bundle --minify --format=iife --global-name=Plotly --target=es2016 \
    --alias:regl=@plotly/regl --alias:stream=stream-browserify --define:global=window --define:define.amd=false \
    --legal-comments=eof --log-level=warning \
    --banner:js="/*! plotly.js v$version, partial build for videosweep (scatter, parcoords); MIT License, Copyright (c) Plotly Technologies Inc.: see LICENSE-plotly.js.txt */" \
    --outfile="$scratch/plotly-videosweep.min.js"
cp "$scratch/plotly-videosweep.min.js" "$here/../plotly-videosweep.min.js"
echo "wrote $(cd "$here/.." && pwd)/plotly-videosweep.min.js ($(wc -c < "$here/../plotly-videosweep.min.js") bytes)"
