#!/bin/sh
# Removes what install.sh installed.
set -eu
rm -f service/telemetry.env
rmdir service 2>/dev/null || true
echo "removed telemetry agent from ${RECONCILER_TARGET}"
