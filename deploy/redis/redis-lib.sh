# Shell functions for start-redis and start-sentinel (sourced; POSIX sh, busybox or Debian).
#
# The Sentinels and the Redis nodes use addresses, never names, once they run: Sentinel with
# resolve-hostnames looks a lost node's name up again in its main loop each second, and where
# Docker's DNS takes seconds to say that a name is gone (a Swarm node without an upstream
# resolver: 10 s), each lookup stalls the Sentinel into TILT mode and no failover happens.
# Names are resolved here, at start, with a time limit.
NODES="redis-primary redis-replica"
SENTINEL_NAMES="sentinel-1 sentinel-2 sentinel-3"

# read_password FILE: print the Redis password kept in FILE. It goes into a config file between
# double quotes, so it must be one line of printable characters without quotes, backslashes or
# spaces; anything else is refused here with a message rather than becoming a config Redis
# cannot parse.
read_password() {
  if [ ! -r "$1" ]; then
    echo "redis: cannot read the password file $1 (a compose/Swarm secret named redis_password)" >&2
    exit 2
  fi
  pw=$(head -n 1 "$1" | tr -d '\r\n')
  case "$pw" in
    '') echo "redis: the password file $1 is empty" >&2; exit 2 ;;
    *[!A-Za-z0-9._~+=@%^:,/-]*) echo "redis: the password in $1 may only use letters, digits and ._~+=@%^:,/-" >&2; exit 2 ;;
  esac
  if [ "${#pw}" -lt 16 ]; then echo "redis: the password in $1 is shorter than 16 characters" >&2; exit 2; fi
  printf '%s' "$pw"
}

# lookup NAME: print NAME's IPv4 address, or nothing when it does not resolve within 2 s.
lookup() {
  timeout 2 getent hosts "$1" 2>/dev/null | awk '$1 ~ /^[0-9]+[.][0-9]+[.][0-9]+[.][0-9]+$/ { print $1; exit }'
}

# ask ADDRESS PORT COMMAND...: run a redis-cli command with the password, within 2 s.
ask() {
  addr=$1 port=$2; shift 2
  REDISCLI_AUTH="$REDIS_PASSWORD" timeout 2 redis-cli -h "$addr" -p "$port" "$@" 2>/dev/null
}

# sentinel_master [SKIP]: the primary's address as the first Sentinel that answers (other than
# SKIP, a Sentinel's own name) sees it; nothing when none answers.
sentinel_master() {
  for name in $SENTINEL_NAMES; do
    [ "$name" = "${1:-}" ] && continue
    addr=$(lookup "$name")
    [ -n "$addr" ] || continue
    master=$(ask "$addr" 26379 SENTINEL get-master-addr-by-name pycluster | head -n 1)
    case "$master" in
      *.*.*.*) echo "$master"; return 0 ;;
    esac
  done
  return 0
}

# node_master: the address of the Redis node that says it is a master (ROLE), redis-primary
# first; nothing when none does.
node_master() {
  for name in $NODES; do
    addr=$(lookup "$name")
    [ -n "$addr" ] || continue
    if [ "$(ask "$addr" 6379 ROLE | head -n 1)" = master ]; then echo "$addr"; return 0; fi
  done
  return 0
}

# my_addresses: this container's addresses, one per line.
my_addresses() {
  hostname -i 2>/dev/null | tr ' ' '\n' | grep -v '^$' || true
}
