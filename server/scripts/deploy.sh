#!/usr/bin/env bash
# Pull, install, migrate, restart, verify.
set -euo pipefail
cd "$(dirname "$0")/../.."
git pull --ff-only origin main
npm ci --no-audit --no-fund
npm run migrate
server/scripts/stop.sh
server/scripts/start.sh
