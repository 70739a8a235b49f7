#!/usr/bin/env python3
"""Renders every deploy/k8s overlay with `kubectl kustomize` and validates
every object it emits:

* built-in kinds against the Kubernetes OpenAPI schemas (kubernetes-validate,
  strict: unknown fields are errors);
* MPIJob against tests/deploy/schemas/mpijob-v2beta1.json, and its Launcher
  and Worker pod templates against Kubernetes' PodTemplateSpec (strict);
* PodMonitor against tests/deploy/schemas/podmonitor-v1.json.

A kind with no schema is an error. Before the real check, broken copies of
the rendered objects (a misspelt field in the MPIJob, in a pod template and
in the PodMonitor; a wrong type in a Deployment) must be rejected, so the
check can fail.

  validate_k8s.py --kubectl KUBECTL [--k8s-version 1.33.0] [--source-dir DIR]

Run it with a Python that has kubernetes-validate (scripts/setup.sh installs
it with kubectl into ~/.cache/cnx-deploy-tools). Exit 0: every object valid.
"""
import argparse
import copy
import json
import os
import subprocess
import sys

import jsonschema
import kubernetes_validate
import yaml


def render(kubectl, overlay):
    out = subprocess.run([kubectl, "kustomize", overlay], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"kubectl kustomize {overlay} failed:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def pod_template_errors(template, version, where):
    doc = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"}, "template": template}
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = "/".join(str(p) for p in e.path)
        return [f"{where}: {e.message} (at {path})"]
    return []


def errors_of(doc, schemas, version):
    kind, api = doc.get("kind"), doc.get("apiVersion")
    name = doc.get("metadata", {}).get("name", "?")
    where = f"{kind} {name}"
    if kind == "MPIJob":
        errs = [f"{where}: {e.message} (at {'/'.join(str(p) for p in e.path)})"
                for e in jsonschema.Draft7Validator(schemas["MPIJob"]).iter_errors(doc)]
        for role, spec in (doc.get("spec", {}).get("mpiReplicaSpecs") or {}).items():
            if isinstance(spec, dict) and isinstance(spec.get("template"), dict):
                errs += pod_template_errors(spec["template"], version, f"{where} {role} template")
        return errs
    if kind == "PodMonitor":
        return [f"{where}: {e.message} (at {'/'.join(str(p) for p in e.path)})"
                for e in jsonschema.Draft7Validator(schemas["PodMonitor"]).iter_errors(doc)]
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{where}: no schema for {api} {kind}"]
    except kubernetes_validate.ValidationError as e:
        return [f"{where}: {e.message} (at {'/'.join(str(p) for p in e.path)})"]
    return []


def broken_copies(docs):
    """Objects with one mistake each, that the validation must reject."""
    by_kind = {d["kind"]: d for d in docs}
    out = []
    mpijob = copy.deepcopy(by_kind["MPIJob"])
    mpijob["spec"]["slotPerWorker"] = 2
    out.append(("MPIJob with a misspelt spec field", mpijob))
    mpijob = copy.deepcopy(by_kind["MPIJob"])
    mpijob["spec"]["mpiReplicaSpecs"]["Launcher"]["restartPolicy"] = "OnExitCode"
    out.append(("MPIJob with an unknown restartPolicy", mpijob))
    mpijob = copy.deepcopy(by_kind["MPIJob"])
    mpijob["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    out.append(("MPIJob worker template with a misspelt container field", mpijob))
    pm = copy.deepcopy(by_kind["PodMonitor"])
    pm["spec"]["podMetricsEndpoints"][0]["honourLabels"] = True
    out.append(("PodMonitor with a misspelt endpoint field", pm))
    dep = copy.deepcopy(by_kind["Deployment"])
    dep["spec"]["replicas"] = "one"
    out.append(("Deployment with a string replica count", dep))
    unknown = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "x"}}
    out.append(("an object of a kind with no schema", unknown))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kubectl", required=True)
    ap.add_argument("--k8s-version", default="1.33.0")
    ap.add_argument("--source-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    args = ap.parse_args()
    root = os.path.abspath(args.source_dir)
    schemas = {
        "MPIJob": json.load(open(os.path.join(root, "tests/deploy/schemas/mpijob-v2beta1.json"))),
        "PodMonitor": json.load(open(os.path.join(root, "tests/deploy/schemas/podmonitor-v1.json"))),
    }
    overlays_dir = os.path.join(root, "deploy/k8s/overlays")
    overlays = sorted(d for d in os.listdir(overlays_dir) if os.path.isdir(os.path.join(overlays_dir, d)))
    if not overlays:
        raise SystemExit(f"no overlays in {overlays_dir}")
    failed = 0
    for overlay in overlays:
        docs = render(args.kubectl, os.path.join(overlays_dir, overlay))
        kinds = sorted({d["kind"] for d in docs})
        for label, bad in broken_copies(docs):
            if not errors_of(bad, schemas, args.k8s_version):
                print(f"FAIL {overlay}: the check accepted {label}")
                failed += 1
        for doc in docs:
            for err in errors_of(doc, schemas, args.k8s_version):
                print(f"FAIL {overlay}: {err}")
                failed += 1
        print(f"{overlay}: {len(docs)} objects ({', '.join(kinds)}) checked against Kubernetes "
              f"{args.k8s_version} and the MPIJob/PodMonitor schemas")
    if failed:
        print(f"{failed} problem(s)")
        return 1
    print(f"ok: {len(overlays)} overlays valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
