"""The fault matrix (``evse-hil faults``): every fault case on a fresh rig + agent (+ broker)."""
