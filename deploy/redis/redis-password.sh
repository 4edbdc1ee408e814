# read_password FILE: print the Redis password kept in FILE (sourced by start-redis and
# start-sentinel). It goes into a config file between double quotes, so it must be one line of
# printable characters without quotes, backslashes or spaces; anything else is refused here
# with a message rather than becoming a config Redis cannot parse.
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
