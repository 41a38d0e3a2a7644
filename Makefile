# The two commands of the README. Each does all of its own set-up on a fresh Debian machine.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
OUT    ?= build/demo

.PHONY: demo demo-retrofit test lint venv mosquitto clean bench fuzz faults

venv: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,hil]'
	touch $(STAMP)

# A private broker is started by the tests and the demo; the binary comes from Debian.
mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || { \
	  echo "mosquitto not found: installing it from Debian (apt-get)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients) \
	  || (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients); }

demo: venv mosquitto
	$(VENV)/bin/evse-hil run hil/scenarios/demo.yaml --out $(OUT)

# The retrofit kit on the bench: a Heidelberg wallbox over RS-485 that the aggregator curtails.
demo-retrofit: venv mosquitto
	$(VENV)/bin/evse-hil run hil/scenarios/retrofit-heidelberg.yaml --out build/demo-retrofit

lint: venv
	$(PY) -m ruff check agent drivers hil tests
	$(PY) -m mypy agent drivers

test: venv mosquitto lint
	$(PY) -m pytest -q

bench: venv mosquitto
	$(VENV)/bin/evse-hil bench

# The dedicated fuzz run: 10,000 malformed MQTT command payloads and 10,000 malformed Modbus
# answers on the virtual wire (make test runs a smaller budget of the same tests).
fuzz: venv
	EVSE_FUZZ_EXAMPLES=10000 $(PY) -m pytest -q tests/unit/test_api_fuzz.py
	$(PY) -m hil.fuzz --modbus --cases 10000 --seed 1

faults: venv mosquitto
	$(VENV)/bin/evse-hil faults

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .hypothesis
