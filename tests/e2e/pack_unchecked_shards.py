# Writes what `cnx-make-shards --source imagefolder --no-shuffle
# --samples-per-shard PER` would write if it packed images unchecked (it now
# decodes every image and skips bad ones): classes in sorted order, files
# sorted by path, keys %09d, "<key>.cls" then the image, and the index. The
# fault tests use it to get corrupt images in front of the workers.
# Usage: pack_unchecked_shards.py FOLDER OUT PER
import hashlib, io, json, os, sys, tarfile
folder, out, per = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.makedirs(out)
classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
items = [(os.path.join(folder, c, n), label) for label, c in enumerate(classes)
         for n in sorted(os.listdir(os.path.join(folder, c)))]
shards = []
for s in range(0, len(items), per):
    name = "shard-%06d.tar" % len(shards)
    with tarfile.open(os.path.join(out, name), "w", format=tarfile.USTAR_FORMAT) as t:
        for k, (path, label) in enumerate(items[s:s + per], start=s):
            ext = os.path.splitext(path)[1][1:].lower()
            for member, data in (("%09d.cls" % k, str(label).encode()), ("%09d.%s" % (k, ext), open(path, "rb").read())):
                info = tarfile.TarInfo(member)
                info.size, info.mode = len(data), 0o644
                t.addfile(info, io.BytesIO(data))
    raw = open(os.path.join(out, name), "rb").read()
    shards.append({"name": name, "samples": len(items[s:s + per]), "bytes": len(raw),
                   "sha256": hashlib.sha256(raw).hexdigest()})
json.dump({"version": 1, "dataset": "folder", "total_samples": len(items), "classes": classes, "shards": shards},
          open(os.path.join(out, "index.json"), "w"), indent=2)
