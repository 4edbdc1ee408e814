"""The stack on a 3-node Docker Swarm (deploy/stack.yml), with the same images as compose.

Each test builds a swarm of its own with ../shared/docker/ensure-swarm (real dockerd per node, real
VXLAN overlay), deploys the stack with `docker stack deploy`, and always ends with `ensure-swarm down`.
"""

import os

import pytest

from loadtest import chaos_stack
from loadtest.chaos import Timing, judge, verdict_line
from loadtest.stack_compose import http_get
from loadtest.stack_swarm import SwarmStack, swarm_problem

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

TIMING = Timing(warm=4.0, tail=2.0)


@pytest.fixture
def swarm(built_images, stack_env):
    """A fresh 3-node swarm with the stack deployed from the session's images; torn down after."""
    problem = swarm_problem()
    if problem:
        if os.environ.get("REQUIRE_DOCKER") == "1":
            pytest.fail(f"REQUIRE_DOCKER=1 but no swarm can be built: {problem}", pytrace=False)
        pytest.skip(f"no swarm: {problem}")
    stack = SwarmStack(image_tag=stack_env["IMAGE_TAG"])
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


def run(stack, scenario):
    """A chaos function against the swarm, judged like `make chaos` does."""
    before = stack.counter()
    out = scenario(stack, TIMING)
    res = judge(scenario.__name__, out, before, stack.counter(), "swarm",
                {"server": "pycluster", "policy": "swarm", "workers": None})
    print(verdict_line(res))
    return res


def test_swarm_spreads_the_stack_and_survives_losing_the_primary_node(swarm):
    """App replicas on every node, Redis nodes and Sentinels apart, HAProxy everywhere; then the node
    with the Redis primary is killed: no idempotent request fails, /count is back within 10 s, the
    app replicas run again on the surviving nodes within 60 s."""
    nodes = {"node-1", "node-2", "node-3"}
    assert {t["node"] for t in swarm.tasks("app")} == nodes
    assert sorted(t["node"] for t in swarm.tasks("haproxy")) == sorted(nodes)
    redis_nodes = [swarm.tasks(s)[0]["node"] for s in ("redis-primary", "redis-replica")]
    assert len(set(redis_nodes)) == 2, redis_nodes
    assert {swarm.tasks(f"sentinel-{i}")[0]["node"] for i in (1, 2, 3)} == nodes
    for host in swarm.load_hosts:
        code, headers, body = http_get(f"{host}/", 3)
        assert code == 200 and body.startswith("Hello"), (host, code, body)
    res = run(swarm, chaos_stack.swarm_primary_node_kill)
    assert res["passed"], chaos_stack.explain(res)


def test_swarm_survives_losing_a_node(swarm):
    """A node without the Redis primary is killed: <= 1% of requests through the others fail in the
    20 s after, and the app replicas run again on the surviving nodes within 60 s."""
    res = run(swarm, chaos_stack.swarm_node_kill)
    assert res["passed"], chaos_stack.explain(res)
