#!/usr/bin/env bash
# The host speaker (docs/protocols.md, "Host speaker") with real cnx-worker
# ranks under mpirun: 1 host x 2 ranks on loopback, Fashion-MNIST shards in
# leases, each job against its own cnx-coordinator.
#  1. per-rank protocol (coordinator.protocol: rank) and host protocol (the
#     default) train the same job to the end: the coordinator's ledgers agree
#     (leases done, samples unused, each rank's epoch and position, the final
#     commit) and the final checkpoints are bit-identical; the database shows
#     who spoke (ranks registered by a host, or on their own).
#  2. host protocol, kill -9 of the speaker (local rank 0) after a commit:
#     the attempt ends, the coordinator sees the host's heartbeats stop and
#     fails the attempt; a relaunch resumes from the last committed
#     checkpoint and ends bit-identical to the per-rank run of 1; the ledger:
#     every committed checkpoint has all its parts, no sample is used twice
#     within an epoch (train.sample_log), attempt 2 completed.
# Usage: fault_host_speaker_test.sh <cnx-worker> <cnx-coordinator> <cnx-make-shards>
source "$(dirname "$0")/lib.sh"
coordinator_test_init fault_host_speaker 280 "$@"
STEPS=60
# Steps of tens of ms (as fault_coordinator_resume_test): a kill lands
# between a commit and the end of the job.
export E2E_INPUT_SIZE=224 E2E_DIMS="[32, 64, 128, 256]"

run_to_end() { # run_to_end JOB LOG [args...]: 2 ranks (launch_workers) must complete $STEPS steps
  launch_workers "$1" "$2" 2 "${@:3}"
  wait_rc "$MPI_PID"
  [ "$RC" = 0 ] || fail "$2 exited $RC"
  grep -q "training completed: $STEPS steps" "$WORK/$2.log" || fail "$2 did not complete"
}
# ledger JOB: the coordinator's rows as one JSON summary (python dict).
LEDGER_PY='
import json, sqlite3, sys
rows = dict(sqlite3.connect(sys.argv[1]).execute("select key, value from state"))
job = json.loads(rows["job"])
ranks = {int(k[5:]): json.loads(v) for k, v in rows.items() if k.startswith("rank/")}
ckpts = {int(k[5:]): json.loads(v) for k, v in rows.items() if k.startswith("ckpt/")}
parts = {}
for k in rows:
    if k.startswith("part/"):
        _, cid, r = k.split("/")
        parts.setdefault(int(cid), set()).add(int(r))
'

# 1. Both protocols, same job, to the end.
coordinator_job by_rank
coordinator_job by_host
run_to_end by_rank by_rank --set coordinator.protocol=rank
run_to_end by_host by_host
grep -q "host '.*' registered 2 ranks" "$WORK/coordinator-by_host.log" ||
  fail "by_host: the coordinator logged no host registration"
grep -q "one speaker per host (1 hosts for 2 ranks)" "$WORK/by_host.log" || fail "by_host: no speaker elected"
same_final by_rank by_host "per-rank vs host protocol"
python3 - "$WORK/by_rank.sqlite" "$WORK/by_host.sqlite" <<PY || fail "the ledgers of the two protocols differ"
import sys
$LEDGER_PY
a = (job, ranks, ckpts)
sys.argv[1] = sys.argv[2]
$LEDGER_PY
b = (job, ranks, ckpts)
(ja, ra, ca), (jb, rb, cb) = a, b
assert ja["state"] == jb["state"] == 5 and ja["attempt"] == jb["attempt"] == 1, (ja, jb)
assert ja["done"] == jb["done"] and ja["unused"] == jb["unused"], ("leases", ja, jb)
assert not any(r.get("hosted") for r in ra.values()), "per-rank job has hosted ranks"
assert all(r.get("hosted") for r in rb.values()) and len({r["host"] for r in rb.values()}) == 1, rb
for r in (0, 1):
    for key in ("epoch", "next", "finished"):
        assert ra[r][key] == rb[r][key], (r, key, ra[r], rb[r])
    assert len(ra[r]["leases"]) == len(rb[r]["leases"]), (r, ra[r]["leases"], rb[r]["leases"])
final = lambda c: max((v for v in c.values() if v["state"] == 1), key=lambda v: v["step"])
assert final(ca)["step"] == final(cb)["step"] == $STEPS, (final(ca), final(cb))
print("ok: ledgers agree: %d leases done, %d samples unused, ranks at (epoch, position) %s, final commit at step %d;"
      " per-rank job: ranks on their own, host job: both ranks registered by host '%s'"
      % (jb["done"], jb["unused"], [(rb[r]["epoch"], rb[r]["next"]) for r in (0, 1)], $STEPS, rb[0]["host"]))
PY

# 2. kill -9 of the speaker after a commit, relaunch.
coordinator_job kill 4
launch_workers kill kill1 2 --set train.sample_log="$WORK/samples"
wait_commit kill1 10 120 || fail "no checkpoint at step >= 10 committed before the kill"
# shellcheck disable=SC2046
kill_speaker kill1 "$WORK/coordinator-kill.log" "[01]" $(rank_pids "$MPI_PID") # heartbeat_timeout_s 4
cp -r "$WORK/samples" "$WORK/samples-attempt1"
run_to_end kill kill2 --resume auto --set train.sample_log="$WORK/samples"
grep -q "resumed from .* at step $LAST_COMMIT " "$WORK/kill2.log" || fail "the relaunch did not resume from step $LAST_COMMIT"
same_final by_rank kill "speaker killed, relaunched (host protocol) vs uninterrupted per-rank run"
python3 - "$WORK/kill.sqlite" "$LAST_COMMIT" <<PY || fail "the coordinator's ledger after the speaker's death is wrong"
import sys
$LEDGER_PY
assert job["state"] == 5 and job["attempt"] == 2 and job["world"] == 2, job
assert all(r.get("hosted") for r in ranks.values()), ranks
committed = [c for c in ckpts.values() if c["state"] == 1]
for c in committed:
    assert parts.get(c["id"]) == {0, 1}, ("committed checkpoint without all parts", c["id"], parts.get(c["id"]))
# (retention may have deleted it since: state 3)
resumed = [c for c in ckpts.values() if c["state"] in (1, 3) and c["step"] == int(sys.argv[2])]
assert resumed and resumed[0]["attempt"] == 1, ("the commit resumed from is not attempt 1's", resumed)
assert any(c["attempt"] == 2 and c["step"] == $STEPS for c in committed), "no final commit by attempt 2"
print("ok: ledger: attempt 2 completed; %d committed checkpoints (kept) each with both parts; resumed from "
      "attempt 1's commit at step %s; %d leases done, %d samples unused" %
      (len(committed), sys.argv[2], job["done"], job["unused"]))
PY
no_sample_twice "$WORK/samples-attempt1" "$WORK/samples" "$LAST_COMMIT" "0 1" "0 1" relaunch
