"""The pure core of a retrofitted wallbox: state mapping, current rounding, session machine.

No I/O, no clock, no await, no logging: time is an input (like ``agent.pilot``).
"""
