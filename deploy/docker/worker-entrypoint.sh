#!/usr/bin/env bash
# Entrypoint of the MPIJob worker pods. The mpi-operator's launcher starts the
# ranks (cnx-worker) in this container over ssh, so PID 1 is this script, not
# a rank. Kubernetes sends SIGTERM to PID 1 only: forward it to every local
# cnx-worker so they checkpoint and exit (docs/protocols.md, "Failure handling"), wait for them
# for up to CNX_TERM_GRACE_S seconds (keep it below the pod's
# terminationGracePeriodSeconds), then stop sshd.
# sshd runs as the container's user: with $CNX_SSHD_CONFIG, else
# $HOME/.sshd_config when the image has one (non-root: port 2222, see the
# Dockerfiles), else the system config.
set -u
grace=${CNX_TERM_GRACE_S:-330}

sshd_config=${CNX_SSHD_CONFIG:-$HOME/.sshd_config}
if [ -f "$sshd_config" ]; then
  /usr/sbin/sshd -De -f "$sshd_config" &
else
  /usr/sbin/sshd -De &
fi
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
