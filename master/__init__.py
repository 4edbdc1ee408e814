"""pycluster: Node.js's cluster module for Python, and a production pre-fork master.

Importing the package imports nothing else: a worker must be able to patch gevent first.
"""
__version__ = "0.2.0"
