#!/usr/bin/env bash
# Stop in reverse order; each process drains on SIGTERM.
set -euo pipefail
sudo systemctl stop mezzofy-scheduler mezzofy-worker mezzofy-api
echo "All services stopped"
