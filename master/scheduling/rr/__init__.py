"""The rr policy: the primary accepts and hands each connection down a worker's own lane.

handle.py   RoundRobinHandle: accept, deal, take back, re-route what a dead worker held
lane.py     the primary's two ends of one worker's lane
rescue.py   what becomes of a dead worker's connections (a pure decision)
tcp_state.py  how far a worker got with a connection, from the kernel's TCP counters
"""
from .handle import RoundRobinHandle

__all__ = ["RoundRobinHandle"]
