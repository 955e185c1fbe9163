"""Helpers shared by the Python gRPC integration tests (rpc_integration.py for the rpc/
transport, services_integration.py for the two services).

  check(cond, what)     print "ok   what" or "FAIL what" (flushed); failures are counted
                        in FAILURES; returns cond.
  gen_stubs(protoc, plugin, out, protos)
                        generate Python message and gRPC stubs with protoc and
                        grpc_python_plugin into `out` for each (include_dir, [files]) of
                        `protos`, and put `out` first on sys.path.
  Gate(path)            a FIFO that holds server work until the test allows it (the
                        scorer's --layer-gate, rpc-testd --gate): allow(n), unread(),
                        wait_taken(), feed(), drain(), release().
  ServerProcess         a server started on 127.0.0.1 port 0 that prints "port N" (and
                        optionally "health-port N") on stdout once it listens; its stderr
                        goes to WORK/<name>.log (appended, so a restart under the same name
                        keeps the earlier log).
  code_of(fn)           run fn(); (grpc.StatusCode, details), OK when it does not raise.
  add_common_args(ap)   the options both scripts take: --proto-dir, --protoc, --plugin,
                        --work, --load, --clients, --calls.
  fresh_work(a)         a.work made absolute, emptied and created.
  summary()             print the verdict; the exit status (0 when no check failed).
  make_certs(dir)       a test CA, a server certificate for localhost / 127.0.0.1 and a
                        client certificate signed by it, and an unrelated self-signed
                        certificate for localhost; returns {file name: path}.

Single-threaded use, except check(), which the load tests call from client threads
(list.append and print are atomic enough for counting failures).
"""
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import termios
import time

FAILURES = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILURES.append(what)
    return cond


def add_common_args(ap):
    ap.add_argument("--proto-dir", required=True)
    ap.add_argument("--protoc", default="protoc")
    ap.add_argument("--plugin", default="/usr/bin/grpc_python_plugin")
    ap.add_argument("--work", required=True)
    ap.add_argument("--load", action="store_true")
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--calls", type=int, default=100)


def fresh_work(a):
    a.work = os.path.abspath(a.work)
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)


def summary():
    if FAILURES:
        print(f"{len(FAILURES)} checks FAILED")
        return 1
    print("all checks passed")
    return 0


def gen_stubs(protoc, plugin, out, protos):
    os.makedirs(out, exist_ok=True)
    base = [protoc, f"--python_out={out}", f"--grpc_python_out={out}",
            f"--plugin=protoc-gen-grpc_python={plugin}"]
    for include, files in protos:
        subprocess.run(base + [f"-I{include}"] + [os.path.join(include, f) for f in files],
                       check=True)
    sys.path.insert(0, out)


class Gate:
    """A FIFO that holds server work until the test lets it go (the scorer's
    --layer-gate: a run waits before each layer; rpc-testd --gate: an Echo "wait-gate"
    holds a worker). allow(n) lets n waits through; release() (EOF) lets every one
    through for good. Our end is opened O_RDWR, so neither side blocks in open()."""

    def __init__(self, path):
        if os.path.exists(path):
            os.unlink(path)
        os.mkfifo(path)
        self.path = path
        self.fd = os.open(path, os.O_RDWR)

    def allow(self, n=1):
        if n > 0:
            os.write(self.fd, b"g" * n)

    def unread(self):
        b = fcntl.ioctl(self.fd, termios.FIONREAD, b"\0\0\0\0")
        return int.from_bytes(b, sys.byteorder)

    def wait_taken(self, deadline_s=120):
        """Wait until the server has read every byte allowed (it must: something waits
        for it). True when it has."""
        end = time.time() + deadline_s
        while self.unread() and time.time() < end:
            time.sleep(0.02)
        return self.unread() == 0

    def feed(self):
        """One more byte when the last one has been taken: lets work of unknown length
        go on (polling loops); drain() then takes back what was not used."""
        if self.unread() == 0:
            self.allow(1)

    def drain(self):
        n = self.unread()
        if n:
            os.read(self.fd, n)

    def release(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    close = release


class ServerProcess:
    """argv is the whole command line (it must make the server listen on port 0 of
    127.0.0.1). The inherited environment loses every REAP_* variable, so that the
    caller's settings never leak in; `env` adds variables. `keys`: the port lines to
    wait for, in any order ("port" -> .port, "health-port" -> .health_port)."""

    def __init__(self, work, name, argv, env=None, keys=("port",)):
        self.name = name
        self.logpath = os.path.join(work, f"{name}.log")
        self.log = open(self.logpath, "a")
        e = {k: v for k, v in os.environ.items() if not k.startswith("REAP_")}
        # Under AddressSanitizer freed memory sits in a quarantine (256 MB by default),
        # which would hide what the RSS checks look for; keep it small. Other builds
        # ignore the variable.
        e["ASAN_OPTIONS"] = ":".join(filter(None, [e.get("ASAN_OPTIONS", ""),
                                                   "quarantine_size_mb=8"]))
        e.update(env or {})
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, env=e,
                                  cwd=work, text=True)
        ports = {}
        # Blocking reads: the server prints its ports and flushes once it listens (the
        # ctest timeout covers a server that hangs).
        while len(ports) < len(keys):
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError(f"{name} did not report its {'/'.join(keys)} "
                                   f"(see {self.logpath})")
            k, _, v = line.strip().partition(" ")
            if k in keys:
                ports[k] = int(v)
        self.port = ports.get("port", 0)
        self.health_port = ports.get("health-port", 0)
        self.addr = f"127.0.0.1:{self.port}"

    def alive(self):
        return self.p.poll() is None

    def rss_kb(self, field="VmRSS"):
        """VmRSS (or another /proc status field such as RssAnon) in KiB; -1 if absent."""
        with open(f"/proc/{self.p.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return -1

    def cpu_s(self):
        """User + system CPU seconds the server has used."""
        with open(f"/proc/{self.p.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout=60):
        """SIGTERM, wait (SIGKILL after `timeout` s); the exit status."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = self.p.wait()
        self.log.close()
        return rc

    def logtext(self):
        with open(self.logpath) as f:
            return f.read()


def code_of(fn):
    import grpc
    try:
        fn()
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details() or ""


def _openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_certs(d):
    os.makedirs(d, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=reap test CA", cwd=d)
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
                "extendedKeyUsage=serverAuth\n")
    with open(os.path.join(d, "client.ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    for who in ("server", "client"):
        _openssl("req", *ec, "-keyout", f"{who}.key", "-out", f"{who}.csr", "-subj",
                 f"/CN=reap test {who}", cwd=d)
        _openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{who}.pem", "-days", "2", "-extfile",
                 f"{who}.ext", cwd=d)
    _openssl("req", "-x509", *ec, "-keyout", "other.key", "-out", "other.pem", "-days", "2",
             "-subj", "/CN=localhost", "-addext",
             "subjectAltName=DNS:localhost,IP:127.0.0.1", cwd=d)
    return {k: os.path.join(d, k) for k in
            ("ca.pem", "server.pem", "server.key", "client.pem", "client.key", "other.pem")}
