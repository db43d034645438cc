#!/bin/sh
# The pe-remote CI job: regenerate the staging master's cert, non-interactively.
# Used as-is by github-actions.yml and gitlab-ci.yml beside it (and by pe-remote's own
# tests against a throwaway master). Run from a checkout of pe-remote (fab finds fabfile.py).
#
#   STAGING_MASTER    root@host[:port] of the master
#   SSH_KEY_FILE      private key that logs in as root (mode 0600)
#   KNOWN_HOSTS_FILE  known_hosts holding the master's host key (unknown keys are refused)
#   ARTIFACTS_DIR     where report.json, regen.log and backups/ go (default: artifacts)
#
# Exit codes are pe-remote's (README, "Exit codes"): 0 done, 7 failed and rolled back,
# 8 failed and NOT rolled back, 2-6 refused or failed before any change.
set -eu
out=${ARTIFACTS_DIR:-artifacts}
mkdir -p "$out"
exec fab -H "$STAGING_MASTER" -i "$SSH_KEY_FILE" regen --yes \
    --known-hosts "$KNOWN_HOSTS_FILE" \
    --backup-dir "$out/backups" \
    --report "$out/report.json" \
    --log-file "$out/regen.log"
