"""Shared state with Redis: the seed's page-view counter and sessions, across workers.

Workers share no memory, so the count and the sessions live in Redis. The app is the
project's own (app/): GET /count, GET|PUT|DELETE /session/<id>, GET /health.

    REDIS_URL=redis://127.0.0.1:6379/0 python examples/redis_state.py   # the cluster API
    python -m master app.wsgi:app                                        # the production master
                                                                         # (starts a Redis when REDIS_URL is unset)
Node original (abridged):
    const client = redis.createClient();
    app.get('/count', async (req, res) => {
      const count = await client.incr('page_views');
      res.json({ worker: process.pid, totalViews: count });
    });
"""
import os
import sys

from master import cluster

if cluster.is_primary:
    if not os.environ.get("REDIS_URL"):
        sys.exit("redis_state.py: set REDIS_URL (or run `python -m master app.wsgi:app`, which starts a Redis)")
    workers = int(os.environ.get("WORKERS", os.cpu_count() or 1))
    for _ in range(workers):
        cluster.fork()
    cluster.on("exit", lambda worker, code, signal: worker.exited_after_disconnect or cluster.fork())
    cluster.run()
else:
    from app import create_app

    cluster.serve(create_app(), bind=f"0.0.0.0:{os.environ.get('PORT', '3000')}")
