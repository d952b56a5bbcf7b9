#!/usr/bin/env bash
# First-time setup of a Debian/Ubuntu host for production (PostgreSQL + Redis + nginx).
set -euo pipefail
cd "$(dirname "$0")/../.."
sudo apt-get update
sudo apt-get install -y postgresql redis-server nginx certbot python3-certbot-nginx \
  ffmpeg tesseract-ocr tesseract-ocr-chi-sim tesseract-ocr-msa chromium poppler-utils
npm ci --no-audit --no-fund
sudo -u postgres psql -tc "SELECT 1 FROM pg_roles WHERE rolname='mezzofy_ai'" | grep -q 1 \
  || sudo -u postgres createuser mezzofy_ai
sudo -u postgres psql -tc "SELECT 1 FROM pg_database WHERE datname='mezzofy_ai'" | grep -q 1 \
  || sudo -u postgres createdb mezzofy_ai -O mezzofy_ai
[ -f server/config/.env ] || { cp server/config/.env.example server/config/.env; chmod 600 server/config/.env; }
[ -f server/config/config.yaml ] || cp server/config/config.example.yaml server/config/config.yaml
echo "Edit server/config/.env (DATABASE_URL, REDIS_URL, JWT_SECRET, ADMIN_EMAIL, ADMIN_PASSWORD),"
echo "then: npm run migrate && sudo cp server/deploy/systemd/*.service /etc/systemd/system/ && server/scripts/start.sh"
