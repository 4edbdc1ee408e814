"""The WSGI entry point the workers serve: ``app.wsgi:app``."""

from . import create_app

# Built when a worker imports this module, i.e. after the worker process started; the
# factory opens no connection, so nothing here can be inherited by another process.
app = create_app()
