#!/bin/sh
# Installs the telemetry "service" into the target's work directory. Parameters arrive as
# RECONCILER_PARAM_* environment variables and as JSON on stdin, never on the command line.
set -eu
mkdir -p service
{
  echo "line=${RECONCILER_PARAM_LINEID}"
  echo "broker=${RECONCILER_PARAM_MQTTBROKER}"
  echo "sample_rate=${RECONCILER_PARAM_SAMPLERATE}"
  echo "revision=${RECONCILER_REVISION}"
} > service/telemetry.env.tmp
mv service/telemetry.env.tmp service/telemetry.env
echo "installed telemetry agent for ${RECONCILER_TARGET}"
