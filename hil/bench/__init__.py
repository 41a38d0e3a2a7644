"""``evse-hil bench``: performance figures of the whole agent on the HIL rig, beside their goals.

P1 command latency, P2 safety reaction, P3 footprint, P4 journal drain, P5 meter throughput,
P6 fleet, W1 status page, P7 starved CPU (the agent in a CPU quota), P8 session record per
curtailment change; ``hil.bench.run`` runs them in order and ``hil.bench.report`` writes
JSON and markdown.
"""
