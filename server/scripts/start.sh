#!/usr/bin/env bash
# Start the systemd services and check /health.
set -euo pipefail
redis-cli ping >/dev/null 2>&1 || { echo "Redis is not running"; exit 1; }
pg_isready -q || { echo "PostgreSQL is not running"; exit 1; }
sudo systemctl start mezzofy-api mezzofy-worker mezzofy-scheduler
for _ in $(seq 1 30); do
  if curl -sf "http://127.0.0.1:${PORT:-8000}/health" >/dev/null; then echo "API running"; break; fi
  sleep 1
done
curl -s "http://127.0.0.1:${PORT:-8000}/health" || { echo "API failed to start"; exit 1; }
echo
sudo systemctl is-active mezzofy-api mezzofy-worker mezzofy-scheduler
