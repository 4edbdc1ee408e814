"""The primary side of the cluster API: Primary (fork, IPC dispatch, listen) and the Worker record."""
from .primary import Primary
from .worker import DEAD, DISCONNECTED, LISTENING, NONE, ONLINE, Worker

__all__ = ["Primary", "Worker", "NONE", "ONLINE", "LISTENING", "DISCONNECTED", "DEAD"]
