#!/usr/bin/env bash
# Integrating an aggregator: talking to a charger with the mosquitto command-line clients.
# Every command below is run, as written, by tests/hil/test_orderly_aggregator_examples.py
# against a real agent. Needs mosquitto-clients 2.x (mosquitto_pub, _sub, _rr) and GNU date.
set -euo pipefail

HOST=${HOST:-broker.example.net}      # your MQTT broker
PORT=${PORT:-8883}                    # 8883: MQTT over TLS
DEVICE=${DEVICE:-CN-BJ-0001}          # the charger's device_id
GROUP=${GROUP:-tx-7}                  # a group the charger is configured into (mqtt.groups)
ROOT=${ROOT:-evse/v1}                 # topic root (mqtt.root)
ISSUER=${ISSUER:-agg-1}               # who you are; the charger tracks seq per issuer
# TLS with the aggregator's own client certificate; on a plain test broker set MQTT_OPTS="".
MQTT_OPTS=${MQTT_OPTS-"--cafile ca.crt --cert aggregator.crt --key aggregator.key"}
read -r -a TLS <<< "$MQTT_OPTS"
CONN=(-h "$HOST" -p "$PORT" "${TLS[@]}")

# A command envelope: a fresh id, seq above every earlier one of this issuer (microseconds
# since 1970 will do), issuedAt now. Usage: command TYPE BODY [CONNECTOR] (none: all connectors)
command() {
  local seq now
  seq=$(date +%s%6N)
  now=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
  printf '{"v":1,"id":"%s-%s","type":"%s","issuer":"%s","issuedAt":"%s","seq":%s%s,"body":%s}' \
    "$1" "$seq" "$1" "$ISSUER" "$now" "$seq" "${3:+,\"connector\":$3}" "$2"
}

# 1. Is the charger online, and what is it doing? Both topics are retained: answers at once.
mosquitto_sub "${CONN[@]}" -t "$ROOT/$DEVICE/status" -t "$ROOT/$DEVICE/state" -C 2 -W 10

# 2. Curtail connector 1 to 3.5 kW for 15 minutes. MQTT v5 request/response: the reply comes
#    back on the Response Topic we name (mosquitto_rr sets it and waits for the answer).
mosquitto_rr "${CONN[@]}" -q 1 -t "$ROOT/$DEVICE/cmd" -e "agg/$ISSUER/replies/$DEVICE" -W 10 \
  -m "$(command setLimit '{"limit":{"value":3.5,"unit":"kW"},"durationS":900}' 1)"

# 3. The same pattern over MQTT 3.1.1, which has no Response Topic: the reply goes to rsp.
#    Ask for the composite schedule (what the charger will offer over the next hour).
mosquitto_sub "${CONN[@]}" -V mqttv311 -q 1 -t "$ROOT/$DEVICE/rsp" -C 1 -W 10 &
listener=$!
sleep 1  # let the listener subscribe first
mosquitto_pub "${CONN[@]}" -V mqttv311 -q 1 -t "$ROOT/$DEVICE/cmd" \
  -m "$(command getComposite '{"horizonS":3600,"unit":"A"}' 1)"
wait "$listener"

# 4. Curtail every charger of a group (a transformer, a feeder) with one publish: 10 A each.
#    Within the grid layer the highest priority wins (at equal priority the lower of a group
#    and a connector-specific limit), so it outranks step 2. Each charger answers on its own rsp.
mosquitto_sub "${CONN[@]}" -q 1 -t "$ROOT/+/rsp" -C 1 -W 10 &
listener=$!
sleep 1
mosquitto_pub "${CONN[@]}" -q 1 -t "$ROOT/group/$GROUP/cmd" \
  -m "$(command setLimit '{"limit":{"value":10,"unit":"A"},"durationS":900,"priority":1}')"
wait "$listener"

# 5. Lift every curtailment and profile (an empty filter clears them all), and watch the
#    charger's events (evt) for what followed: commandCleared, sessionUpdated, ...
mosquitto_sub "${CONN[@]}" -q 1 -t "$ROOT/$DEVICE/evt" -C 2 -W 10 &
listener=$!
sleep 1
mosquitto_rr "${CONN[@]}" -q 1 -t "$ROOT/$DEVICE/cmd" -e "agg/$ISSUER/replies/$DEVICE" -W 10 \
  -m "$(command clearProfile '{}')"
wait "$listener"
