#!/usr/bin/env bash
# A shard with corrupt images: an ImageFolder of 96 good Fashion-MNIST PNGs
# plus a truncated PNG, a garbage .png and a garbage .jpg is packed by
# cnx-make-shards (so the index's sha256 matches the shards: the damage is in
# the images, not the files). Two ranks train 2 epochs on it: each bad
# sample is skipped with its reason once per epoch (and only those), and the
# job completes with exit 0.
# Usage: fault_corrupt_shard_test.sh <cnx-worker> <cnx-make-shards>
source "$(dirname "$0")/lib.sh"
WORKER="$1"
MAKE_SHARDS="$2"
e2e_init fault_corrupt 200

make_fmnist_shards "$MAKE_SHARDS" "$WORK/fmnist" 96
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
assert len(pngs) == 96, len(pngs)
for c in ("a", "b"):
    os.makedirs(os.path.join(root, c))
for i, data in enumerate(pngs):
    open(os.path.join(root, "ab"[i % 2], "good%03d.png" % i), "wb").write(data)
rng = random.Random(7)
open(os.path.join(root, "a", "bad_truncated.png"), "wb").write(pngs[0][: len(pngs[0]) // 2])
open(os.path.join(root, "b", "bad_garbage.png"), "wb").write(bytes(rng.randrange(256) for _ in range(600)))
open(os.path.join(root, "a", "bad_garbage.jpg"), "wb").write(b"\xff\xd8\xff\xe0" + bytes(rng.randrange(256) for _ in range(600)))
PY
"$MAKE_SHARDS" --source imagefolder --input "$WORK/folder" --samples-per-shard 25 -o "$WORK/shards" -q \
  > "$WORK/make_folder_shards.log" 2>&1 || fail "cnx-make-shards --source imagefolder failed"
TOTAL="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["total_samples"])' "$WORK/shards/index.json")"
[ "$TOTAL" = 99 ] || fail "index holds $TOTAL samples, expected 99 (96 good + 3 corrupt)"

EVERY=0 write_config "$WORK/job.yaml" "$WORK/shards/index.json" "$WORK/ckpt" \
  "schedule: {epochs: 2, warmup_epochs: 0.5, log_every: 5}"
timeout -k 5 150 "${MPIRUN[@]}" "$WORKER" --config "$WORK/job.yaml" --resume none > "$WORK/train.log" 2>&1 \
  || fail "training on the corrupt shard exited $?"
grep -q "training completed" "$WORK/train.log" || fail "training did not complete"
SKIPS="$(grep -c "data: skipped sample" "$WORK/train.log" || true)"
[ "$SKIPS" = 6 ] || fail "$SKIPS skipped-sample lines, expected 6 (3 corrupt images x 2 epochs)"
REASONS="$(grep -o 'data: skipped sample [^ ]*: [a-z_]*' "$WORK/train.log" | awk '{print $NF}' | sort | uniq -c | tr -s ' \n' ' ')"
grep -q "data: skipped sample [^ ]*: truncated_image" "$WORK/train.log" || fail "no truncated_image skip: $REASONS"
KEYS="$(grep -o 'data: skipped sample [^:]*' "$WORK/train.log" | sort -u | wc -l)"
[ "$KEYS" = 3 ] || fail "$KEYS distinct samples skipped, expected the 3 corrupt ones"
echo "ok: 3 corrupt images skipped and counted once per epoch (reasons:$REASONS); training completed"
