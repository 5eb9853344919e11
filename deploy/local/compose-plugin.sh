#!/usr/bin/env bash
# Build the `docker compose` CLI plugin (v2, pinned in deploy/local/compose/go.mod) from the Go
# module proxy once, cache it, and install it where the docker client looks for plugins.
# Used only to validate docker-compose.yml (`docker compose config`); no Docker engine needed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${STREAMSCORE_CACHE:-$HOME/.cache/streamscore}
bin="$cache/bin/docker-compose-$(sha256sum "$here/compose/go.sum" | cut -c1-12)"
plugins="$HOME/.docker/cli-plugins"
if [ ! -x "$bin" ]; then
  echo "building the docker compose plugin (once; a few minutes cold)..." >&2
  mkdir -p "$cache/bin"
  (cd "$here/compose" && GOFLAGS=-mod=mod go build -o "$bin.tmp" github.com/docker/compose/v2/cmd)
  mv "$bin.tmp" "$bin"
fi
mkdir -p "$plugins"
ln -sf "$bin" "$plugins/docker-compose"
docker compose version >/dev/null
