"""Exit statuses: a protocol between workers and the master, and the master's own."""

# A worker exiting with one of these must not be respawned in a loop.
WORKER_APP_LOAD_ERROR = 4  # the app cannot be imported
WORKER_LISTEN_ERROR = 5  # the worker cannot listen where the master said

# The master's own exit statuses.
MASTER_OK = 0
MASTER_CONFIG_ERROR = 2  # a flag or environment value is invalid
MASTER_CANNOT_LISTEN = 3  # the address is in use or not permitted
MASTER_APP_LOAD_ERROR = 4  # no worker could load the app at start-up
MASTER_CONTROL_SOCKET_ERROR = 7  # the control socket's path is held by someone else or unsafe
