#!/usr/bin/env bash
# Entrypoint of the MPIJob worker pods. The mpi-operator's launcher starts the
# ranks (cnx-worker) in this container over ssh, so PID 1 is this script, not
# a rank. Kubernetes sends SIGTERM to PID 1 only: forward it to every local
# cnx-worker so they checkpoint and exit (docs/protocols.md, "Failure handling"), wait for them
# for up to CNX_TERM_GRACE_S seconds (keep it below the pod's
# terminationGracePeriodSeconds), then stop sshd.
set -u
grace=${CNX_TERM_GRACE_S:-330}

/usr/sbin/sshd -De &
sshd_pid=$!

worker_pids() { pgrep -x cnx-worker || true; }

on_term() {
  pids=$(worker_pids)
  if [ -n "$pids" ]; then
    echo "cnx-worker-entrypoint: SIGTERM, forwarding to cnx-worker pids: $pids" >&2
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq "$grace"); do
      [ -z "$(worker_pids)" ] && break
      sleep 1
    done
  fi
  kill -TERM "$sshd_pid" 2>/dev/null || true
  wait "$sshd_pid"
  exit 0
}
trap on_term TERM INT

wait "$sshd_pid"
