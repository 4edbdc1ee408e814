# pycluster images, one file, three targets:
#   app       python -m master app.wsgi:app          (base dependencies + the `demo` extra)
#   loadtest  locust, ENTRYPOINT ["locust"]          (base + the `loadtest` extra)
#   baseline  the same app under gunicorn + gevent  (base + the `baseline` extra)
#
# Written for the classic builder as well as BuildKit: no `# syntax=` line (it would pull a
# frontend image), no RUN --mount, no heredocs. Stages come in the order app, loadtest, baseline:
# the classic builder builds every stage before its target, so `app` never waits for Locust.
# Dependencies come from pyproject.toml only (read with tomllib, so the dependency layers stay
# cached while the code changes); pip installs them into /opt/venv in a throwaway stage that is
# copied over, so the final images hold no pip cache and no compiler.

ARG PYTHON_IMAGE=python:3.12-slim

# --- shared runtime base: environment and the non-root user ---------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/srv/pycluster \
    CONTROL_SOCKET=/run/pycluster/control.sock
# A fixed uid so volumes and `docker compose exec` agree; /run/pycluster holds the control
# socket, writable by that user (a root-only default is a known failure of non-root containers).
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/app --shell /usr/sbin/nologin app \
 && mkdir -p /run/pycluster \
 && chown app:app /run/pycluster \
 && chmod 0700 /run/pycluster
WORKDIR /srv/pycluster

# --- dependency stages: requirements derived from pyproject.toml -----------------------------
FROM runtime AS deps
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c 'import tomllib; p = tomllib.load(open("/tmp/pyproject.toml", "rb"))["project"]; print("\n".join(p["dependencies"] + p["optional-dependencies"]["demo"]))' > /tmp/requirements.txt \
 && cat /tmp/requirements.txt \
 && python -m venv /opt/venv \
 && pip install --prefer-binary -r /tmp/requirements.txt

# --- app -------------------------------------------------------------------------------------
FROM runtime AS app
COPY --from=deps /opt/venv /opt/venv
COPY --chown=root:root . /srv/pycluster
USER app
EXPOSE 8000
# The stand-in and slim images have no curl: ask /health with the interpreter. The port follows
# PORT, else BIND, else the master's default 8000.
HEALTHCHECK --interval=5s --timeout=3s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('PORT') or os.environ.get('BIND', ':8000').rpartition(':')[2]; urllib.request.urlopen('http://127.0.0.1:%s/health' % port, timeout=2)"]
# Signals: compose runs this under an init (`init: true`; `docker run --init` by hand), which
# forwards every signal to the master. The master is also a proper PID 1 without one: it installs
# its own handlers, drains workers for GRACEFUL_TIMEOUT on SIGTERM, and reaps its children.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "master", "app.wsgi:app"]

# --- loadtest --------------------------------------------------------------------------------
FROM deps AS deps-loadtest
ARG LOADTEST_EXTRAS="loadtest"
RUN python -c 'import sys, tomllib; p = tomllib.load(open("/tmp/pyproject.toml", "rb"))["project"]; print("\n".join(d for e in sys.argv[1:] for d in p["optional-dependencies"][e]))' $LOADTEST_EXTRAS > /tmp/requirements-extra.txt \
 && cat /tmp/requirements-extra.txt \
 && pip install --prefer-binary -r /tmp/requirements.txt -r /tmp/requirements-extra.txt

FROM runtime AS loadtest
COPY --from=deps-loadtest /opt/venv /opt/venv
COPY --chown=root:root . /srv/pycluster
USER app
# Matplotlib wants a writable config dir; HOME is the app user's.
ENV MPLCONFIGDIR=/tmp/matplotlib
EXPOSE 8089 5557
ENTRYPOINT ["locust"]
CMD ["--help"]

# --- baseline: gunicorn with gevent workers, for side-by-side runs ---------------------------
FROM deps AS deps-baseline
ARG BASELINE_EXTRAS="baseline"
RUN python -c 'import sys, tomllib; p = tomllib.load(open("/tmp/pyproject.toml", "rb"))["project"]; print("\n".join(d for e in sys.argv[1:] for d in p["optional-dependencies"][e]))' $BASELINE_EXTRAS > /tmp/requirements-extra.txt \
 && cat /tmp/requirements-extra.txt \
 && pip install --prefer-binary -r /tmp/requirements.txt -r /tmp/requirements-extra.txt

FROM app AS baseline
USER root
COPY --from=deps-baseline /opt/venv /opt/venv
USER app
ENV PORT=8001
EXPOSE 8001
# The worker count follows the master's WORKERS, defaulting like it to the CPUs this container
# may use (nproc honours CPU affinity).
CMD ["sh", "-c", "exec gunicorn --worker-class gevent --workers \"${WORKERS:-$(nproc)}\" --bind \"0.0.0.0:${PORT}\" --graceful-timeout \"${GRACEFUL_TIMEOUT:-10}\" app.wsgi:app"]
