"""The pycluster stack (deploy/stack.yml) on a 3-node Swarm built by ../shared/docker/ensure-swarm.

Used by the swarm-node-kill chaos scenario and the swarm e2e tests. Node-1 is this machine's engine
(the manager); node-2 and node-3 are workers that can be killed. Slot labels place the Redis nodes
and Sentinels: slot 1 (the primary, sentinel-1) on node-2, slot 2 (the replica, sentinel-2) on
node-3, slot 3 (sentinel-3) on node-1, so killing node-2 takes the Redis primary, a Sentinel, an
app replica and a HAProxy at once. Every wait polls against a deadline.
"""

import json
import os
import subprocess
from pathlib import Path

from loadtest.stack_compose import REPO, free_port, http_get, wait_until

ENSURE_SWARM = Path(os.environ.get("ENSURE_SWARM", REPO.parent / "shared" / "docker" / "ensure-swarm"))
STACK_FILE = REPO / "deploy" / "stack.yml"
SLOTS = {"node-2": 1, "node-3": 2, "node-1": 3}
COUNTER_KEY = "page_views"
_REDIS_CLI = 'REDISCLI_AUTH="$(cat /run/secrets/redis_password)" exec redis-cli "$@"'
# ensure-swarm's nodes share the bridge swarm0. With Docker's FORWARD policy DROP and
# bridge-nf-call-iptables on, traffic bridged between two worker nodes (their VXLAN and gossip)
# is dropped, so workers only reach the manager. This rule lets swarm0 forward to itself, the way
# hosts on one switch reach each other; it is removed again by down().
BRIDGE_RULE = ("DOCKER-USER", "-i", "swarm0", "-o", "swarm0", "-j", "ACCEPT")


def swarm_problem() -> str | None:
    """Why a swarm cannot be built here, or None."""
    if not ENSURE_SWARM.is_file():
        return f"no {ENSURE_SWARM}"
    done = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                          timeout=30)
    return None if done.returncode == 0 else f"docker info exited {done.returncode}: {done.stderr.strip()[:200]}"


def _alive(pid_file: Path) -> bool:
    """True when the pid in pid_file is a running process."""
    try:
        os.kill(int(pid_file.read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


class SwarmStack:
    """A swarm of three nodes with the stack `name` deployed from deploy/stack.yml."""

    def __init__(self, name: str = "pycluster", image_tag: str = "latest", replicas: int = 3):
        self.name = name
        self.image_tag = image_tag
        self.replicas = replicas
        # Free ports: node-1 is this machine, where another stack may hold 8000 and 8404.
        self.port = free_port()
        self.stats_port = free_port()
        self.env = {**os.environ, "IMAGE_TAG": image_tag, "APP_REPLICAS": str(replicas), "APP_PORT": str(self.port),
                    "HAPROXY_STATS_PORT": str(self.stats_port)}
        for knob in ("IMAGE_PREFIX", "REDIS_IMAGE", "HAPROXY_IMAGE", "REDIS_PASSWORD_FILE", "READY_PORT",
                     "READY_PATH", "APP_SLOTS", "APP_MODULE", "REPLICAS_PER_HOST", "GRACEFUL_TIMEOUT"):
            self.env.pop(knob, None)
        self.addresses: dict[str, str] = {}
        self.killed: list[str] = []

    # --- the swarm ----------------------------------------------------------------------------
    def tool(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        """Run ensure-swarm ARGS; its stdout."""
        done = subprocess.run(["bash", str(ENSURE_SWARM), *args], capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"ensure-swarm {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
        return done.stdout

    def node_docker(self, node: str, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        """The docker CLI against one node's engine."""
        done = subprocess.run(["bash", str(ENSURE_SWARM), "docker", node, *args], capture_output=True, text=True,
                              timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"docker ({node}) {' '.join(args)[:120]} exited {done.returncode}: {done.stderr[-1500:]}")
        return done

    def images(self) -> list[str]:
        """The images the stack runs."""
        return [f"pycluster-app:{self.image_tag}", "haproxy:3.0", "redis:7.4-alpine"]

    def up(self) -> None:
        """Build the swarm, label its nodes, copy the images, deploy the stack and wait for it."""
        self.tool("up", "3", timeout=180)
        self._bridge_rule("-C") or self._bridge_rule("-I")
        for line in self.tool("ls").splitlines():
            node, address = line.split()[:2]
            self.addresses[node] = address
        for node, slot in SLOTS.items():
            node_id = self.node_docker(node, "info", "--format", "{{.Swarm.NodeID}}").stdout.strip()
            subprocess.run(["docker", "node", "update", "--label-add", f"pycluster.slot={slot}", node_id],
                           check=True, capture_output=True, timeout=60)
        self._load_images()
        done = subprocess.run(["docker", "stack", "deploy", "-c", str(STACK_FILE), self.name], capture_output=True,
                              text=True, timeout=120, env=self.env, cwd=REPO)
        if done.returncode != 0:
            raise AssertionError(f"docker stack deploy exited {done.returncode}: {done.stderr[-2000:]}")
        self.wait_deployed()

    def _load_images(self) -> None:
        """Copy to the worker nodes the images they lack (or hold in another version)."""
        missing = []
        for image in self.images():
            local = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", image], capture_output=True,
                                   text=True, timeout=30, check=True).stdout.strip()
            for node in ("node-2", "node-3"):
                there = self.node_docker(node, "image", "inspect", "--format", "{{.Id}}", image, check=False)
                if there.stdout.strip() != local:
                    missing.append(image)
                    break
        if missing:
            self.tool("load", *missing, timeout=600)

    def down(self) -> None:
        """ensure-swarm down: the stack, the swarm and its nodes are gone (and the bridge rule)."""
        # A killed node is started first, so that it leaves the swarm: its dockerd keeps its state,
        # and a node still in the old swarm could not join the next one.
        for node in self.killed:
            self.tool("start-node", node, timeout=120, check=False)
        self.killed = []
        self.tool("down", timeout=300, check=False)
        # ensure-swarm down waits 10 s at most for each node's dockerd; the next `up` fails while
        # one still runs ("pid file found"), so wait for them to be gone.
        try:
            wait_until(lambda: not any(_alive(f) for f in Path("/run").glob("swarm-node-*.pid")), 120,
                       "the swarm nodes' dockerd processes to exit", 0.5)
        except AssertionError as exc:  # teardown goes on; the next `up` says what is left
            print(f"stack_swarm: {exc}")
        while self._bridge_rule("-C"):
            self._bridge_rule("-D")

    @staticmethod
    def _bridge_rule(action: str) -> bool:
        """iptables ACTION on BRIDGE_RULE; True when it succeeded (for -C: the rule is there)."""
        done = subprocess.run(["iptables", action, *BRIDGE_RULE], capture_output=True, text=True, timeout=30)
        return done.returncode == 0

    # --- state --------------------------------------------------------------------------------
    def tasks(self, service: str) -> list[dict]:
        """Running tasks of a service: [{"node": ..., "name": ...}] (node-1 is reported by hostname)."""
        done = subprocess.run(["docker", "service", "ps", f"{self.name}_{service}", "--filter", "desired-state=running",
                               "--format", "{{json .}}"], capture_output=True, text=True, timeout=30)
        rows = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        hostnames = self.hostnames()
        return [{"node": hostnames.get(r["Node"], r["Node"]), "name": r["Name"], "state": r["CurrentState"]}
                for r in rows if r["CurrentState"].startswith("Running")]

    def hostnames(self) -> dict[str, str]:
        """Swarm hostname -> ensure-swarm node name (node-1's hostname is this machine's)."""
        own = subprocess.run(["docker", "info", "--format", "{{.Name}}"], capture_output=True, text=True,
                             timeout=30).stdout.strip()
        return {own: "node-1", "node-2": "node-2", "node-3": "node-3"}

    def wait_deployed(self, deadline: float = 240) -> None:
        """Every service runs its tasks, both Redis nodes replicate, and each HAProxy serves /count."""
        wanted = {"app": self.replicas, "haproxy": 3, "redis-primary": 1, "redis-replica": 1,
                  "sentinel-1": 1, "sentinel-2": 1, "sentinel-3": 1}
        wait_until(lambda: all(len(self.tasks(s)) == n for s, n in wanted.items()), deadline, "all tasks running", 1.0)
        self.wait_replicated()
        self.wait_serving(self.load_hosts, deadline)

    def container(self, node: str, service: str) -> str:
        """The id of a service's running container on a node."""
        out = self.node_docker(node, "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={self.name}_{service}")
        ids = out.stdout.split()
        if not ids:
            raise AssertionError(f"no running {service} container on {node}")
        return ids[0]

    def redis_cli(self, *args: str, port: int = 6379, host: str = "") -> str:
        """redis-cli ARGS from sentinel-3's container (node-1, never killed), authenticated."""
        target = ["-h", host] if host else []
        return self.node_docker("node-1", "exec", self.container("node-1", "sentinel-3"), "sh", "-c", _REDIS_CLI,
                                "redis-cli", *target, "-p", str(port), *args, timeout=20).stdout

    def primary_address(self) -> str:
        """The primary's address as sentinel-3 sees it."""
        return self.redis_cli("SENTINEL", "get-master-addr-by-name", "pycluster", port=26379).split()[0]

    def primary_node(self) -> str:
        """The node whose Redis task is the primary now."""
        address = self.primary_address()
        for service in ("redis-primary", "redis-replica"):
            for task in self.tasks(service):
                cid = self.container(task["node"], service)
                ips = self.node_docker(task["node"], "exec", cid, "hostname", "-i").stdout.split()
                if address in ips:
                    return task["node"]
        return "unknown"

    def wait_replicated(self, deadline: float = 90) -> str:
        """Wait until the primary has a replica in sync and the Sentinels know it; the primary's address."""
        def replicated():
            primary = self.primary_address()
            info = self.redis_cli("INFO", "replication", host=primary).replace("\r", "")
            replicas = self.redis_cli("SENTINEL", "replicas", "pycluster", port=26379)
            return primary if "connected_slaves:1" in info and "master-link-status\nok" in replicas.replace("\r", "") else None
        return wait_until(replicated, deadline, "a Redis replica in sync, known to the Sentinels", 1.0)

    def counter(self) -> int:
        """page_views on the current primary."""
        out = self.redis_cli("GET", COUNTER_KEY, host=self.primary_address()).strip()
        return int(out) if out else 0

    # --- load and faults ----------------------------------------------------------------------
    @property
    def load_hosts(self) -> list[str]:
        """Every node's HAProxy."""
        return [f"http://{self.addresses[n]}:{self.port}" for n in sorted(self.addresses)]

    def load_hosts_without(self, node: str) -> list[str]:
        """The HAProxy of every node but one."""
        return [f"http://{self.addresses[n]}:{self.port}" for n in sorted(self.addresses) if n != node]

    def wait_serving(self, hosts: list[str], deadline: float = 60) -> None:
        """Each host answers / and /health (Redis included, nothing counted) with 200, several times
        in a row: every replica behind it serves."""
        def serving():
            return all(http_get(f"{h}{p}", 3)[0] == 200 for h in hosts for p in ("/", "/health") * 3)
        wait_until(serving, deadline, f"{hosts} serving / and /health", 0.5)

    def victim_node(self, with_primary: bool) -> str:
        """A worker node (node-1, the manager, is never killed) with, or without, the Redis primary."""
        primary = self.primary_node()
        workers = ["node-2", "node-3"]
        if with_primary:
            if primary not in workers:
                raise AssertionError(f"the Redis primary is on {primary}, not on a worker node")
            return primary
        return next(n for n in workers if n != primary)

    def kill_node(self, node: str) -> None:
        """ensure-swarm kill-node: its dockerd and every container on it die at once."""
        self.killed.append(node)
        self.tool("kill-node", node, timeout=60)

    def app_running_off(self, node: str) -> bool:
        """All app replicas run, none of them on `node`."""
        tasks = self.tasks("app")
        return len(tasks) == self.replicas and all(t["node"] != node for t in tasks)


class SwarmChaos(SwarmStack):
    """The chaos target: a swarm of its own for the scenario, always ensure-swarm down at the end."""

    def start(self) -> None:
        """Build the app image, then the swarm and the stack."""
        subprocess.run(["docker", "compose", "-f", str(REPO / "docker-compose.yml"), "build", "app"], check=True,
                       capture_output=True, timeout=900, cwd=REPO, env=self.env)
        try:
            self.up()
        except BaseException:
            self.down()
            raise

    def stop(self) -> None:
        """ensure-swarm down."""
        self.down()

