#!/usr/bin/python3
"""deploy_check.py - offline checks of deploy/ (ctest deploy_manifests).

    deploy_check.py --repo REPO --bin BUILD/bin --work DIR

Installs its tools from PyPI into a venv under DIR and re-runs itself there: kustomize
(the Go library itself, kustomize/api v0.21, as shipped in the pykustomize wheel; loaded
through ctypes, no cffi), kubernetes-validate (bundled Kubernetes JSON schemas) and
yamllint. PyPI unreachable: prints SKIPPED and exits 77.

1. Dockerfiles and compose file: every file a COPY takes from the context, every
   repository path a RUN line names and every build context/dockerfile exists; the
   executables the images ship are built here; the compose file's ${VAR}s are documented
   in deploy/.env.example; the REAP_* variables of .env.example, of the kustomize
   ConfigMaps and of compose's environment are exactly / only those the binaries accept
   (the "[env REAP_...]" of every command's --help).
2. Every overlay (and its scale-out) renders; every object validates strictly (unknown
   fields rejected) against the schemas of the oldest and newest Kubernetes versions
   checked; the facts the deployment relies on hold (shareProcessNamespace, one GPU and
   the toleration, gRPC probes on named health ports, non-root and read-only root,
   an Indexed Job, per-platform node selectors); yamllint --strict is clean on deploy/.
Exits 0 when all pass, 1 on a failure, 77 when the tools cannot be installed.
"""

import argparse
import ctypes
import glob
import json
import os
import re
import subprocess
import sys

K8S_VERSIONS = ("1.30.0", "1.37.0")
OVERLAYS = {
    "gke": ("cloud.google.com/gke-accelerator", "nvidia-h200-141gb"),
    "eks": ("node.kubernetes.io/instance-type", "p5e.48xlarge"),
    "aks": ("node.kubernetes.io/instance-type", "Standard_ND96isr_H200_v5"),
    "cpu": None,
}
PIP_PKGS = ["kubernetes-validate==1.37.0", "yamllint==1.38.0", "pyyaml"]
KUSTOMIZE_PKG = "pykustomize==0.1.4"
HELP_CMDS = [
    ["reap-scorer", "run"], ["reap-scorer", "serve"], ["reap-scorer", "stats"],
    ["reap-scorer", "list"], ["reap-scorer", "export"], ["reap-scorer", "import"],
    ["reap-scorer", "check"], ["reap-scorer", "plan"], ["reap-pruner", "prune"],
    ["reap-pruner", "serve"], ["reapctl"],
]
REAPCTL_CMDS = ["keepset", "verify", "keygen", "tokenize", "score", "watch", "runs",
                "cancel", "models", "stats", "prune", "health"]

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL: " + msg)
    return cond


# ---- tools ---------------------------------------------------------------------------

def ensure_venv(work):
    """Creates WORK/venv with the tools; returns its python or None (PyPI unreachable)."""
    venv = os.path.join(work, "venv")
    py = os.path.join(venv, "bin", "python")
    stamp = os.path.join(venv, "deploy-check-tools")
    if os.path.exists(stamp):
        return py
    os.makedirs(work, exist_ok=True)
    log = open(os.path.join(work, "pip.log"), "w")
    try:
        subprocess.run([sys.executable, "-m", "venv", venv], check=True, stdout=log, stderr=log)
        pip = [py, "-m", "pip", "install", "--quiet", "--timeout", "30", "--retries", "1"]
        subprocess.run(pip + PIP_PKGS, check=True, stdout=log, stderr=log, timeout=300)
        # The wheel declares Python >= 3.14 for its cffi wrapper only; the Go shared
        # library inside is what is used here.
        subprocess.run(pip + ["--no-deps", "--ignore-requires-python", KUSTOMIZE_PKG],
                       check=True, stdout=log, stderr=log, timeout=300)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
        return None
    open(stamp, "w").close()
    return py


class Kustomize:
    """kustomize build through libpykustomize.so (the kustomize Go API via cgo)."""

    def __init__(self):
        import sysconfig  # the package's cffi wrapper is not imported: only its library
        so = glob.glob(os.path.join(sysconfig.get_paths()["purelib"], "pykustomize",
                                    "_lib", "linux-*", "libpykustomize.so"))
        if not so:
            raise RuntimeError("libpykustomize.so not found")
        lib = ctypes.CDLL(so[0])
        lib.pykustomize_build.argtypes = [ctypes.c_char_p, ctypes.c_char_p,
                                          ctypes.POINTER(ctypes.c_void_p)]
        lib.pykustomize_build.restype = ctypes.c_int
        lib.pykustomize_last_error.restype = ctypes.c_void_p
        lib.pykustomize_version_string.restype = ctypes.c_void_p
        self.lib = lib
        self.version = ctypes.string_at(lib.pykustomize_version_string()).decode()

    def build(self, path):
        out = ctypes.c_void_p()
        opts = b"{}"  # kustomize's defaults: root-only loading, no plugins, no helm
        rc = self.lib.pykustomize_build(path.encode(), opts, ctypes.byref(out))
        if rc != 0 or not out.value:
            err = self.lib.pykustomize_last_error()
            raise RuntimeError(ctypes.string_at(err).decode() if err else "rc %d" % rc)
        return ctypes.string_at(out.value).decode()


# ---- 1. images, compose, variables ---------------------------------------------------

def help_vars(bindir):
    names = set()
    texts = []
    for cmd in HELP_CMDS + [["reapctl", c] for c in REAPCTL_CMDS]:
        argv = [os.path.join(bindir, cmd[0])] + cmd[1:] + ["--help"]
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        texts.append(p.stdout)
    for t in texts:
        names |= set(re.findall(r"\bREAP_[A-Z0-9_]+", t))
    return names


def dockerfile_checks(repo, bindir, path):
    rel = os.path.relpath(path, repo)
    text = open(path).read().replace("\\\n", " ")
    check(os.path.exists(path + ".dockerignore"), rel + ": no .dockerignore beside it")
    shipped = set()
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("COPY ") and "--from=" not in line:
            for src in line.split()[1:-1]:
                if src != ".":
                    check(os.path.exists(os.path.join(repo, src)), "%s: COPY %s: no such file" % (rel, src))
        if line.startswith("RUN "):
            for p in re.findall(r"(?:\./)?((?:scripts|deploy)/[\w./-]+)", line):
                check(os.path.exists(os.path.join(repo, p)), "%s: RUN names %s: no such file" % (rel, p))
            for b in re.findall(r"build/bin/([\w-]+)", line):
                shipped.add(b)
                check(os.path.exists(os.path.join(bindir, b)), "%s: ships build/bin/%s: not built" % (rel, b))
            if "cmake -S" in line:
                check("cmake --build build" in line, rel + ": not the CMake commands of scripts/test.sh")
    check({"reap-scorer", "reap-pruner", "reapctl"} <= shipped, rel + ": does not ship the 3 executables")
    check(re.search(r'ENTRYPOINT \["/usr/bin/tini"', text) is not None, rel + ": tini is not the entrypoint")
    check(re.search(r"^USER 10001", text, re.M) is not None, rel + ": not a non-root USER")
    check("scripts/install-deps.sh" in text, rel + ": does not use scripts/install-deps.sh")
    for var in re.findall(r"^\s*(REAP_[A-Z_]+)=", re.sub(r"ENV ", "\n", text), re.M):
        yield var


def env_example(path):
    names = set()
    for line in open(path):
        m = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=", line)
        if m:
            names.add(m.group(1))
    return names


def compose_checks(repo, deploy, accepted, documented):
    import yaml
    path = os.path.join(deploy, "compose.yaml")
    text = open(path).read()
    doc = yaml.safe_load(text)
    for var in set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text)):
        check(var in documented, "compose.yaml: ${%s} is not in .env.example" % var)
    services = doc["services"]
    for name in ("scorer", "pruner", "shell", "score", "prune"):
        check(name in services, "compose.yaml: no service " + name)
    b = services["scorer"]["build"]
    ctx = os.path.normpath(os.path.join(deploy, b["context"]))
    check(ctx == os.path.normpath(repo), "compose.yaml: build context is not the repository")
    df = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", b["dockerfile"])
    check(os.path.exists(os.path.join(ctx, df)), "compose.yaml: dockerfile %s missing" % df)
    check(services["pruner"].get("pid") == "service:scorer", "compose.yaml: pruner does not share the scorer's PID namespace")
    gpu = services["scorer"].get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    check(any("gpu" in d.get("capabilities", []) for d in gpu), "compose.yaml: scorer reserves no GPU")
    stores = [v for s in ("scorer", "pruner") for v in services[s]["volumes"] if v.startswith("store:")]
    check(len(stores) == 2, "compose.yaml: scorer and pruner do not share the store volume")
    for s in services.values():
        env = s.get("environment") or {}
        for k in env:
            if k.startswith("REAP_"):
                check(k in accepted, "compose.yaml: %s is not read by the binaries" % k)
    for sec in doc.get("secrets", {}).values():
        check("file" in sec, "compose.yaml: secret without a file")


# ---- 2. render + validate ------------------------------------------------------------

def find(objs, kind, name):
    for o in objs:
        if o["kind"] == kind and o["metadata"]["name"] == name:
            return o
    return None


def server_checks(label, objs, overlay):
    dep = find(objs, "Deployment", "reap")
    if not check(dep is not None, label + ": no Deployment reap"):
        return
    spec = dep["spec"]["template"]["spec"]
    check(spec.get("shareProcessNamespace") is True, label + ": shareProcessNamespace is not true")
    check(dep["spec"]["strategy"]["type"] == "Recreate", label + ": strategy is not Recreate")
    names = [c["name"] for c in spec["containers"]]
    check(names == ["scorer", "pruner"], label + ": containers %r" % names)
    psc = spec["securityContext"]
    check(psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) != 0, label + ": pod may run as root")
    vols = {v["name"]: v for v in spec["volumes"]}
    check(vols["store"]["persistentVolumeClaim"]["claimName"] == "reap-store", label + ": store volume")
    check(vols["models"]["persistentVolumeClaim"].get("readOnly") is True, label + ": models volume not read-only")
    check("secret" in vols["signing-key"], label + ": no signing key Secret")
    for c in spec["containers"]:
        sc = c["securityContext"]
        check(sc.get("readOnlyRootFilesystem") is True, "%s/%s: root filesystem writable" % (label, c["name"]))
        check(sc.get("capabilities", {}).get("drop") == ["ALL"], "%s/%s: capabilities kept" % (label, c["name"]))
        check(sc.get("allowPrivilegeEscalation") is False, "%s/%s: privilege escalation" % (label, c["name"]))
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        check("/tmp" in mounts and vols[mounts["/tmp"]["name"]].get("emptyDir") is not None,
              "%s/%s: no emptyDir /tmp" % (label, c["name"]))
        check(mounts["/data/models"].get("readOnly") is True, "%s/%s: models writable" % (label, c["name"]))
        ports = {p["containerPort"]: p.get("name") for p in c["ports"]}
        for probe in ("livenessProbe", "readinessProbe"):
            port = c.get(probe, {}).get("grpc", {}).get("port")
            check(port in ports and ports[port] and ports[port].startswith("health"),
                  "%s/%s: %s is not a gRPC probe on a named health port" % (label, c["name"], probe))
        check(all(p["name"] for p in c["ports"]), "%s/%s: unnamed port" % (label, c["name"]))
    scorer = spec["containers"][0]
    gpu = scorer["resources"].get("limits", {}).get("nvidia.com/gpu")
    tol = [t for t in spec.get("tolerations", []) if t.get("key") == "nvidia.com/gpu"]
    if overlay == "cpu":
        check(gpu is None and not tol, label + ": the CPU overlay requests a GPU")
    else:
        check(gpu == 1, label + ": scorer GPU limit %r" % gpu)
        check(tol and tol[0]["operator"] == "Exists" and tol[0]["effect"] == "NoSchedule",
              label + ": no nvidia.com/gpu toleration")
        key, val = OVERLAYS[overlay]
        check(spec.get("nodeSelector", {}).get(key) == val, label + ": nodeSelector %r" % spec.get("nodeSelector"))
    pvc = find(objs, "PersistentVolumeClaim", "reap-store")
    check(pvc and pvc["spec"]["accessModes"] == ["ReadWriteOnce"], label + ": store PVC is not ReadWriteOnce")
    check(find(objs, "Namespace", "reap") is not None, label + ": no Namespace")
    check(find(objs, "Service", "reap") is not None, label + ": no Service")
    np_ = find(objs, "NetworkPolicy", "reap-clients-only")
    check(np_ is not None and np_["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"],
          label + ": no NetworkPolicy admitting labelled clients")
    cms = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("reap-config")]
    check(len(cms) == 1 and scorer["envFrom"][0]["configMapRef"]["name"] == cms[0]["metadata"]["name"],
          label + ": the containers do not read the generated ConfigMap")
    if overlay == "cpu":
        check(cms[0]["data"].get("REAP_BACKEND") == "cpu", label + ": REAP_BACKEND is not cpu")
    for o in objs:
        check(o["metadata"].get("namespace", "reap") == "reap", "%s: %s in namespace %s"
              % (label, o["metadata"]["name"], o["metadata"].get("namespace")))


def scaleout_checks(label, objs, overlay, repo):
    job = find(objs, "Job", "reap-score-shards")
    if not check(job is not None, label + ": no Job reap-score-shards"):
        return
    s = job["spec"]
    check(s.get("completionMode") == "Indexed", label + ": not an Indexed Job")
    check(s["completions"] == s["parallelism"], label + ": completions != parallelism")
    spec = s["template"]["spec"]
    c = spec["containers"][0]
    check(c["args"] == ["reap-score-shard"], label + ": the Job does not run reap-score-shard")
    cm = [o for o in objs if o["kind"] == "ConfigMap"][0]
    check(int(cm["data"]["SHARD_COUNT"]) == s["completions"], label + ": SHARD_COUNT != completions")
    if overlay != "cpu":
        key, val = OVERLAYS[overlay]
        check(spec.get("nodeSelector", {}).get(key) == val, label + ": Job nodeSelector")
        check(c["resources"]["limits"].get("nvidia.com/gpu") == 1, label + ": Job pods without a GPU")
    scratch = [v for v in spec["volumes"] if v["name"] == "scratch"]
    check(scratch and "emptyDir" in scratch[0], label + ": shard store not on node-local emptyDir")
    merge = find(objs, "Job", "reap-merge-shards")
    check(merge is not None and merge["spec"].get("suspend") is True, label + ": merge Job missing or not suspended")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--in-venv", action="store_true")
    a = ap.parse_args()
    repo, bindir, work = (os.path.abspath(p) for p in (a.repo, a.bin, a.work))
    if not a.in_venv:
        py = ensure_venv(work)
        if py is None:
            print("SKIPPED: the tools (kubernetes-validate, yamllint, pykustomize) could not be "
                  "installed from PyPI (see %s/pip.log)" % work)
            return 77
        return subprocess.call([py, os.path.abspath(__file__), "--repo", repo, "--bin", bindir,
                                "--work", work, "--in-venv"])

    import yaml
    import kubernetes_validate
    from importlib.metadata import version
    deploy = os.path.join(repo, "deploy")
    kz = Kustomize()
    print("tools: kustomize/api v0.21.3 via %s, kubernetes-validate %s (schemas %s), yamllint %s, PyYAML %s"
          % (kz.version, version("kubernetes-validate"), ", ".join(K8S_VERSIONS),
             version("yamllint"), version("pyyaml")))

    # 1.
    accepted = help_vars(bindir)
    check(len(accepted) > 20, "too few REAP_* variables in the --help outputs: %d" % len(accepted))
    documented = env_example(os.path.join(deploy, ".env.example"))
    doc_reap = {v for v in documented if v.startswith("REAP_")}
    for v in sorted(doc_reap - accepted):
        check(False, ".env.example: %s is not read by any binary" % v)
    for v in sorted(accepted - doc_reap):
        check(False, ".env.example: %s (read by the binaries) is not documented" % v)
    for df in ("Dockerfile", "Dockerfile.cpu"):
        for var in dockerfile_checks(repo, bindir, os.path.join(deploy, df)):
            check(var in accepted, "%s: ENV %s is not read by the binaries" % (df, var))
    compose_checks(repo, deploy, accepted, documented)
    for env in glob.glob(os.path.join(deploy, "k8s", "**", "*.env"), recursive=True):
        for line in open(env):
            k = line.split("=", 1)[0].strip()
            if k.startswith("REAP_"):
                check(k in accepted, "%s: %s is not read by the binaries" % (os.path.relpath(env, repo), k))
    print("1. images/compose/variables: %d REAP_* variables, .env.example documents them all" % len(accepted))

    # 2.
    n_objs = 0
    for overlay in OVERLAYS:
        for sub in ("", "scale-out"):
            d = os.path.join(deploy, "k8s", "overlays", overlay, sub)
            label = os.path.relpath(d, repo).rstrip("/.")
            try:
                rendered = kz.build(d)
            except RuntimeError as exc:
                check(False, "%s: kustomize build failed: %s" % (label, exc))
                continue
            os.makedirs(os.path.join(work, "rendered"), exist_ok=True)
            with open(os.path.join(work, "rendered", label.replace("/", "_") + ".yaml"), "w") as fh:
                fh.write(rendered)
            objs = [o for o in yaml.safe_load_all(rendered) if o]
            for o in objs:
                for ver in K8S_VERSIONS:
                    try:
                        kubernetes_validate.validate(o, ver, strict=True)
                    except kubernetes_validate.ValidationError as exc:
                        check(False, "%s: %s/%s invalid for Kubernetes %s: %s at %s"
                              % (label, o["kind"], o["metadata"]["name"], ver, exc.message,
                                 "/".join(str(p) for p in exc.path)))
                    except Exception as exc:  # unknown version/kind: a failure too
                        check(False, "%s: %s/%s: %s" % (label, o["kind"], o["metadata"]["name"], exc))
            n_objs += len(objs)
            if sub:
                scaleout_checks(label, objs, overlay, repo)
            else:
                server_checks(label, objs, overlay)
            print("2. %s: %d objects rendered and validated (%s)"
                  % (label, len(objs), ", ".join(sorted({o["kind"] for o in objs}))))
    yfiles = sorted(glob.glob(os.path.join(deploy, "**", "*.yaml"), recursive=True))
    yfiles += [os.path.join(deploy, ".yamllint.yaml")]
    p = subprocess.run([sys.executable, "-m", "yamllint", "--strict", "-c",
                        os.path.join(deploy, ".yamllint.yaml")] + yfiles,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    check(p.returncode == 0, "yamllint:\n" + p.stdout)
    print("2. yamllint --strict: %d files %s" % (len(yfiles), "clean" if p.returncode == 0 else "NOT clean"))
    if failures:
        print("%d failure(s)" % len(failures))
        return 1
    print("ok: %d objects in 8 renderings valid for Kubernetes %s; images, compose and variables consistent"
          % (n_objs, " and ".join(K8S_VERSIONS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
