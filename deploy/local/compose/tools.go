//go:build tools

// Package tools pins the Docker Compose v2 CLI plugin, built from the Go module proxy so
// `docker compose config` can validate docker-compose.yml on machines without Docker's apt repo.
package tools

import _ "github.com/docker/compose/v2/cmd"
