#!/usr/bin/env bash
# The README flow against a running `ztdp serve` (default http://127.0.0.1:8080).
set -euo pipefail
B=${ZTDP_URL:-http://127.0.0.1:8080}
post() { curl -sS -X "${3:-POST}" -H 'Content-Type: application/json' "$B$1" -d "$2"; echo; }

post /v1/environments '{"metadata": {"name": "dev", "owner": "platform-team"}, "spec": {"description": "development"}}'
post /v1/environments '{"metadata": {"name": "prod", "owner": "platform-team"}, "spec": {"description": "production"}}'
post /v1/applications '{"metadata": {"name": "checkout", "owner": "team-x"}, "spec": {"description": "checkout", "tags": ["payments"], "lifecycle": {}}}'
post /v1/applications/checkout/environments/allowed '["dev", "prod"]' PUT
post /v1/applications/checkout/services '{"metadata": {"name": "checkout-api", "owner": "team-x"}, "spec": {"application": "checkout", "port": 8080, "public": true}}'
post /v1/applications/checkout/services/checkout-api/versions '{"version": "1.0.0", "config_ref": "default-config", "owner": "team-x", "image": "ghcr.io/acme/checkout-api:1.0.0"}'
post /v1/policies '{"metadata": {"name": "dev-before-prod", "owner": "platform-team"}, "spec": {"transition": {"edge": "deploy", "environment": "prod"}, "rule": {"type": "promotion", "requires": ["dev"]}}}'
post /v1/applications/checkout/services/checkout-api/versions/1.0.0/deploy '{"environment": "prod"}'   # denied: 403
post /v1/applications/checkout/services/checkout-api/versions/1.0.0/deploy '{"environment": "dev"}'
curl -sS "$B/v1/applications/checkout/plan?environment=dev"; echo
