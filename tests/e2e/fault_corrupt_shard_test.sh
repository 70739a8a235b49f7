#!/usr/bin/env bash
# A shard with corrupt images: an ImageFolder of 296 good Fashion-MNIST PNGs
# plus a truncated PNG, a garbage .png and a garbage .jpg is packed in
# cnx-make-shards' format by this script (cnx-make-shards itself refuses
# images that do not decode; docs/data.md), with a matching index (the
# damage is in the images, not the files). Two ranks train 2 epochs on it: each bad
# sample is skipped with its reason once per epoch (and only those), and the
# job completes with exit 0.
# Each rank's /metrics is scraped while it trains: the sum over ranks of
# cnx_worker_corrupt_samples_total{reason=R} must equal the skips of reason R
# in the log, 3 planted images x 2 epochs in all. For that final count to be
# on a scrape before the ranks exit, the layout puts every bad image first in
# its shard: unshuffled shards of 150 (class a: 2 bad + 148 good, class b:
# 1 bad + 148 good; files sorted by name, "bad_*" first), one shard per rank
# and epoch, read in order (data.shuffle_buffer = 1). So a rank skips its bad
# images in the first batch of each epoch (37 steps of 2 x 4 images), and its
# counters are final from the second step of epoch 1 on (steps 39..74 of 74).
# Usage: fault_corrupt_shard_test.sh <cnx-worker> <cnx-make-shards>
source "$(dirname "$0")/lib.sh"
WORKER="$1"
MAKE_SHARDS="$2"
e2e_init fault_corrupt 200

make_fmnist_shards "$MAKE_SHARDS" "$WORK/fmnist" 296
python3 - "$WORK/fmnist" "$WORK/folder" <<'PY'
import os, random, sys, tarfile
src, root = sys.argv[1], sys.argv[2]
pngs = []
for name in sorted(os.listdir(src)):
    if name.endswith(".tar"):
        with tarfile.open(os.path.join(src, name)) as t:
            for m in t.getmembers():
                if m.name.endswith(".png"):
                    pngs.append(t.extractfile(m).read())
assert len(pngs) == 296, len(pngs)
for c in ("a", "b"):
    os.makedirs(os.path.join(root, c))
for i, data in enumerate(pngs):
    open(os.path.join(root, "ab"[i % 2], "good%03d.png" % i), "wb").write(data)
rng = random.Random(7)
open(os.path.join(root, "a", "bad_truncated.png"), "wb").write(pngs[0][: len(pngs[0]) // 2])
open(os.path.join(root, "b", "bad_garbage.png"), "wb").write(bytes(rng.randrange(256) for _ in range(600)))
open(os.path.join(root, "a", "bad_garbage.jpg"), "wb").write(b"\xff\xd8\xff\xe0" + bytes(rng.randrange(256) for _ in range(600)))
PY
# What `cnx-make-shards --source imagefolder --no-shuffle --samples-per-shard 150`
# would write if it packed images unchecked: classes in sorted order, files
# sorted by path, keys %09d, "<key>.cls" then the image, and the index.
python3 "$(dirname "$0")/pack_unchecked_shards.py" "$WORK/folder" "$WORK/shards" 150 || fail "packing the corrupt shards failed"
TOTAL="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["total_samples"])' "$WORK/shards/index.json")"
[ "$TOTAL" = 299 ] || fail "index holds $TOTAL samples, expected 299 (296 good + 3 corrupt)"

python3 - "$WORK/shards" "$WORK/folder" <<'PY' || fail "the shards do not start with their bad images (the layout the metrics check relies on)"
import json, os, sys, tarfile
root, folder = sys.argv[1], sys.argv[2]
bad = {open(os.path.join(folder, c, n), "rb").read()
       for c, n in (("a", "bad_garbage.jpg"), ("a", "bad_truncated.png"), ("b", "bad_garbage.png"))}
shards = json.load(open(os.path.join(root, "index.json")))["shards"]
found = []
for s in shards:
    with tarfile.open(os.path.join(root, s["name"])) as t:
        flags = [t.extractfile(m).read() in bad for m in t.getmembers() if not m.name.endswith(".cls")]
    k = sum(flags)
    if flags != [True] * k + [False] * (len(flags) - k):
        sys.exit("%s: bad images at positions %s, expected first" % (s["name"], [i for i, f in enumerate(flags) if f]))
    found.append(k)
if found != [2, 1]:
    sys.exit("bad images per shard %s, expected [2, 1]" % found)
PY

PORT="$(python3 -c '
import socket
for _ in range(50):
    a = socket.socket(); a.bind(("127.0.0.1", 0)); p = a.getsockname()[1]
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", p + 1)); print(p); break
    except OSError:
        pass
    finally:
        a.close(); b.close()
')"
[ -n "$PORT" ] || fail "no two consecutive free TCP ports"
EVERY=0 write_config "$WORK/job.yaml" "$WORK/shards/index.json" "$WORK/ckpt" \
  "schedule: {epochs: 2, warmup_epochs: 0.5, log_every: 5}"
# Scrapes both ranks every 50 ms until $WORK/stop exists; keeps each rank's
# latest body with the highest cnx_worker_step.
cat > "$WORK/scrape.py" <<'PY'
import os, re, sys, time, urllib.request
port, work = int(sys.argv[1]), sys.argv[2]
best = {}
while not os.path.exists(os.path.join(work, "stop")):
    for rank in (0, 1):
        try:
            body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % (port + rank), timeout=2).read().decode()
        except Exception:
            continue
        m = re.search(r"^cnx_worker_step\{[^}]*\} (\S+)$", body, re.M)
        step = float(m.group(1)) if m else -1
        if step >= best.get(rank, -2):
            best[rank] = step
            with open(os.path.join(work, "metrics-rank%d.txt" % rank), "w") as f:
                f.write(body)
    time.sleep(0.05)
PY
e2e_bg python3 "$WORK/scrape.py" "$PORT" "$WORK"
SCRAPER="$BG_PID"
timeout -k 5 150 "${MPIRUN[@]}" "$WORKER" --config "$WORK/job.yaml" --resume none --set data.shuffle_buffer=1 \
  --set metrics.enabled=true --set metrics.worker_port="$PORT" > "$WORK/train.log" 2>&1 \
  || fail "training on the corrupt shard exited $?"
touch "$WORK/stop"
wait_rc "$SCRAPER"
grep -q "training completed" "$WORK/train.log" || fail "training did not complete"
SKIPS="$(grep -c "data: skipped sample" "$WORK/train.log" || true)"
[ "$SKIPS" = 6 ] || fail "$SKIPS skipped-sample lines, expected 6 (3 corrupt images x 2 epochs)"
REASONS="$(grep -o 'data: skipped sample [^ ]*: [a-z_]*' "$WORK/train.log" | awk '{print $NF}' | sort | uniq -c | tr -s ' \n' ' ')"
grep -q "data: skipped sample [^ ]*: truncated_image" "$WORK/train.log" || fail "no truncated_image skip: $REASONS"
KEYS="$(grep -o 'data: skipped sample [^:]*' "$WORK/train.log" | sort -u | wc -l)"
[ "$KEYS" = 3 ] || fail "$KEYS distinct samples skipped, expected the 3 corrupt ones"
echo "ok: 3 corrupt images skipped and counted once per epoch (reasons:$REASONS); training completed"

for r in 0 1; do
  [ -s "$WORK/metrics-rank$r.txt" ] || fail "rank $r's /metrics was never scraped"
  if command -v promtool > /dev/null; then
    promtool check metrics < "$WORK/metrics-rank$r.txt" > "$WORK/promtool-rank$r.log" 2>&1 \
      || fail "promtool check metrics failed on rank $r's /metrics: $(cat "$WORK/promtool-rank$r.log")"
  fi
done
python3 - "$WORK" <<'PY' || fail "cnx_worker_corrupt_samples_total does not match the skipped samples"
import collections, re, sys
work = sys.argv[1]
log = open(work + "/train.log").read()
expected = collections.Counter(re.findall(r"data: skipped sample \S+: ([a-z_]+)", log))
got = collections.Counter()
for rank in (0, 1):
    body = open("%s/metrics-rank%d.txt" % (work, rank)).read()
    step = float(re.search(r"^cnx_worker_step\{[^}]*\} (\S+)$", body, re.M).group(1))
    if step < 39:  # counters are final from step 39 (see the header)
        sys.exit("rank %d: last scrape at step %g, before the counters were final (step 39)" % (rank, step))
    for labels, value in re.findall(r"^cnx_worker_corrupt_samples_total\{([^}]*)\} (\S+)$", body, re.M):
        if 'rank="%d"' % rank not in labels:
            sys.exit("rank %d exports a corrupt-samples series of another rank: %s" % (rank, labels))
        got[re.search(r'reason="([^"]*)"', labels).group(1)] += float(value)
print("cnx_worker_corrupt_samples_total over ranks: %s; skips in the log: %s" % (dict(got), dict(expected)))
if got != expected or sum(got.values()) != 6:
    sys.exit("expected %s (3 corrupt images x 2 epochs), got %s" % (dict(expected), dict(got)))
PY
echo "ok: cnx_worker_corrupt_samples_total summed over the ranks equals the skips by reason (6 = 3 planted x 2 epochs)"
