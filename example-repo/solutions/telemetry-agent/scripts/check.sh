#!/bin/sh
# get: exit 0 when the installed service matches the parameters, 3 when it differs or is
# missing. With --health: exit 0 when the service is installed.
set -u
if [ "${1:-}" = "--health" ]; then
  [ -f service/telemetry.env ] && exit 0
  echo "service/telemetry.env missing" >&2
  exit 1
fi
want="line=${RECONCILER_PARAM_LINEID}
broker=${RECONCILER_PARAM_MQTTBROKER}
sample_rate=${RECONCILER_PARAM_SAMPLERATE}"
if [ ! -f service/telemetry.env ]; then
  echo "service not installed"
  exit 3
fi
have=$(grep -v '^revision=' service/telemetry.env)
if [ "$have" = "$want" ]; then
  echo "$have"
  exit 0
fi
echo "installed: $have"
echo "wanted:    $want"
exit 3
