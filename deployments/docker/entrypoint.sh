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
  "")
    echo "usage: merak-entrypoint scenario|topology|network|compute|compute-worker|agent [--flag value ...]" >&2
    echo "       (or set MERAK_SERVICE)" >&2
    exit 64
    ;;
  *)
    exec "$service" "$@"
    ;;
esac
