#!/usr/bin/env bash
# The README's main flow against a running `ztdp serve`, with the bodies the original ZTDP
# clients send; where the original API let a body leave out its owner, it does here too.
# Stops at the first answer that is not the status expected (curl --fail-with-body, set -e),
# and ends once checkout-api 1.0.0 is Ready in dev and then, promoted, in prod.
#
#   config/examples/flow.sh [TOKEN]
#
# The server: ZTDP_SERVER (or ZTDP_URL), default http://127.0.0.1:8080. With authentication
# on, pass a platform-admin token as the argument or in ZTDP_TOKEN.
set -euo pipefail
B=${ZTDP_SERVER:-${ZTDP_URL:-http://127.0.0.1:8080}}
TOKEN=${1:-${ZTDP_TOKEN:-}}
AUTH=()
if [[ -n $TOKEN ]]; then AUTH=(-H "Authorization: Bearer $TOKEN"); fi

# call STATUS METHOD PATH [BODY]: print the answer, stop unless its status is STATUS
call() {
  local want=$1 method=$2 path=$3 body=() fail=() out code
  if [[ $# -gt 3 ]]; then body=(-H 'Content-Type: application/json' -d "$4"); fi
  if [[ $want -lt 400 ]]; then fail=(--fail-with-body); fi  # an error status fails curl
  out=$(curl -sS "${fail[@]}" -X "$method" "${AUTH[@]}" "${body[@]}" -w '\n%{http_code}' \
    "$B$path") || { echo "$method $path failed: $out" >&2; exit 1; }
  code=${out##*$'\n'}
  echo "$method $path -> $code ${out%$'\n'*}"
  if [[ $code != "$want" ]]; then echo "expected $want" >&2; exit 1; fi
}

# ready ENV APP SVC: wait (60 s at most) until the deployment is Ready; stop if it fails
ready() {
  local path="/v1/environments/$1/deployments/$2/$3" status=""
  for _ in $(seq 1 300); do
    status=$(curl -sS --fail-with-body "${AUTH[@]}" "$B$path" \
      | grep -Eo '"status": ?"[A-Za-z]+"' | head -1 | grep -Eo '[A-Za-z]+"$' | tr -d '"')
    case $status in
      Ready) echo "$path: Ready"; return 0 ;;
      Failed | Blocked) echo "$path: $status" >&2; curl -sS "${AUTH[@]}" "$B$path" >&2; exit 1 ;;
    esac
    sleep 0.2
  done
  echo "$path: still ${status:-unknown} after 60 s" >&2
  exit 1
}

# A server that has just been started answers 503 "starting" for a second or two
for _ in $(seq 1 150); do
  if curl -sS -o /dev/null --fail "$B/v1/healthz" 2>/dev/null; then break; fi
  sleep 0.2
done

# Environments (platform team)
call 201 POST /v1/environments '{"metadata": {"name": "dev", "owner": "platform-team"}, "spec": {"description": "Development environment"}}'
call 201 POST /v1/environments '{"metadata": {"name": "prod", "owner": "platform-team"}, "spec": {"description": "Production environment"}}'

# An application, and where it may run
call 201 POST /v1/applications '{"metadata": {"name": "checkout", "owner": "team-x"}, "spec": {"description": "Handles checkout flows", "tags": ["payments", "frontend"], "lifecycle": {}}}'
call 200 POST /v1/applications/checkout/environments/dev/allowed
call 200 POST /v1/applications/checkout/environments/prod/allowed

# Services and versions: without an owner they take their application's, then their service's
call 201 POST /v1/applications/checkout/services '{"metadata": {"name": "checkout-api", "owner": "team-x"}, "spec": {"application": "checkout", "port": 8080, "public": true}}'
call 201 POST /v1/applications/checkout/services '{"metadata": {"name": "checkout-worker"}, "spec": {"application": "checkout", "port": 9090, "public": false}}'
call 201 POST /v1/applications/checkout/services/checkout-api/versions '{"version": "1.0.0", "config_ref": "default-config", "owner": "team-x"}'
call 201 POST /v1/applications/checkout/services/checkout-worker/versions '{"version": "1.0.0", "config_ref": "default-config"}'

# A database: the resource, given to the application, used by the worker (201: linked now)
call 201 POST /v1/resources '{"kind": "resource", "metadata": {"name": "pg-db", "owner": "team-x"}, "spec": {"type": "postgres", "config_ref": "config/postgres/pg-db"}}'
call 201 POST /v1/applications/checkout/resources/pg-db
call 201 POST /v1/applications/checkout/services/checkout-worker/resources/pg-db
call 200 POST /v1/applications/checkout/services/checkout-worker/resources/pg-db

# A policy: nothing reaches prod before it runs in dev
call 201 POST /v1/policies '{"metadata": {"name": "dev-before-prod", "owner": "platform-team"}, "spec": {"transition": {"edge": "deploy", "environment": "prod"}, "rule": {"type": "promotion", "requires": ["dev"]}}}'

# A denied deploy, then an allowed one, followed until it is Ready
call 403 POST /v1/applications/checkout/services/checkout-api/versions/1.0.0/deploy '{"environment": "prod"}'
call 202 POST /v1/applications/checkout/services/checkout-api/versions/1.0.0/deploy '{"environment": "dev"}'
ready dev checkout checkout-api

# What is deployed where, and the plan
call 200 GET /v1/environments/dev/deployments
call 200 GET /v1/environments/dev/deployments/checkout/checkout-api
call 200 GET '/v1/applications/checkout/plan?environment=dev'
call 200 POST /v1/policies/evaluate '{"application": "checkout", "service": "checkout-api", "version": "1.0.0", "environment": "prod"}'

# Ready in dev: the promotion to prod is allowed now
call 202 POST /v1/applications/checkout/services/checkout-api/versions/1.0.0/deploy '{"environment": "prod"}'
ready prod checkout checkout-api
call 200 GET /v1/environments/prod/deployments/checkout/checkout-api

# Change an environment (the README sends If-Match with the ETag it read)
call 200 PUT /v1/environments/dev '{"metadata": {"name": "dev"}, "spec": {"description": "Development", "reconcile": "report-only"}}'
