"""Shared by every test: helpers for real processes on free loopback ports (tests/support.py)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
