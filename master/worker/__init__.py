"""Code that runs in a worker process. It imports only master.core and master.worker (a test checks)."""
