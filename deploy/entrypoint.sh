#!/bin/sh
# entrypoint.sh - the image's command dispatcher (runs under tini, see the Dockerfiles).
#   scorer ARGS...   reap-scorer ARGS... (default: serve)
#   pruner ARGS...   reap-pruner ARGS... (default: serve)
#   reapctl ARGS...  the CLI
#   anything else    run as given (reap-scorer run ..., reap-genmodel ..., sh)
# Settings come from REAP_* environment variables (deploy/.env.example lists them).
set -e
cmd=${1:-scorer}
[ $# -gt 0 ] && shift
case "$cmd" in
  scorer|reap-scorer)
    [ $# -eq 0 ] && set -- serve
    exec reap-scorer "$@" ;;
  pruner|reap-pruner)
    [ $# -eq 0 ] && set -- serve
    exec reap-pruner "$@" ;;
  reapctl|ctl)
    exec reapctl "$@" ;;
  *)
    exec "$cmd" "$@" ;;
esac
