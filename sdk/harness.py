"""Shared harness for the cloud-SDK compatibility tests in sdk/<dialect>/.

Each test starts a real fulcrum (the binary in $FULCRUM_BIN) with a throwaway data
directory, real local HTTP backends, and drives fulcrum with the cloud's own, unmodified
SDK. Nothing here is a double: the SDK talks HTTP to fulcrum, and traffic goes through
fulcrum's listeners to the backends.

Standard library only, so every dialect's venv can import it.
"""

import contextlib
import http.client
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

TOKEN = "sdk-test-token"


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def taken_port():
    """A listening socket on 127.0.0.1 that another program could not share (no
    SO_REUSEPORT): a port in use. Close it to free the port."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


class Backend:
    """A real HTTP server on 127.0.0.1 that answers every request with its name.

    Records how many requests it served and the last request's headers and path;
    `status` makes it answer with another code (and `headers` adds response headers).
    `delay` (seconds) is how long it thinks before each answer, and with `fail_every` = N
    every Nth request is answered 503. TCP_NODELAY is on, so a keep-alive answer never waits
    for Nagle's algorithm between its head and its body.
    """

    def __init__(self, name, port=None, delay=0.0, fail_every=0):
        self.name = name
        self.port = port or free_port()
        self.delay = delay
        self.fail_every = fail_every
        self.hits = 0
        self.status = 200
        self.headers = {}
        self.last_headers = {}
        self.last_path = None
        self._lock = threading.Lock()
        self._server = None
        self.start()

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _answer(self):
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                with backend._lock:
                    backend.hits += 1
                    backend.last_headers = {k.lower(): v for k, v in self.headers.items()}
                    backend.last_path = self.path
                    status, extra = backend.status, dict(backend.headers)
                    if backend.fail_every and backend.hits % backend.fail_every == 0:
                        status = 503
                if backend.delay:
                    time.sleep(backend.delay)
                body = backend.name.encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "text/plain")
                    self.send_header("content-length", str(len(body)))
                    for k, v in extra.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client (fulcrum, or a health check that gave up) hung up

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self):
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def reset(self):
        with self._lock:
            self.hits = 0


def free_udp_port():
    """A UDP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UdpBackend:
    """A real UDP server on 127.0.0.1 that answers every datagram, in one datagram, with its
    name. Counts the datagrams it got and remembers the payloads' first bytes per sender."""

    def __init__(self, name, port=None):
        self.name = name
        self.hits = 0
        self._lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port or 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        answer = self.name.encode()
        while not self._stop.is_set():
            try:
                _, peer = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.hits += 1
            with contextlib.suppress(OSError):
                self.sock.sendto(answer, peer)

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def udp_ask(port, payload=b"ping", sock=None, timeout=1.0):
    """Sends one datagram to 127.0.0.1:port (from `sock`, else from a fresh socket on a new
    source port) and returns the one datagram that comes back, decoded, or None on timeout."""
    own = sock is None
    if own:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
    try:
        sock.settimeout(timeout)
        sock.sendto(payload, ("127.0.0.1", port))
        try:
            data, _ = sock.recvfrom(65535)
            return data.decode()
        except socket.timeout:
            return None
    finally:
        if own:
            sock.close()


def quic_initial(dcid, scid=b"\x01\x02\x03\x04", size=1200):
    """A datagram shaped as a QUIC v1 Initial (RFC 9000 17.2.2): long header, version 1, the
    given destination and source connection IDs, an empty token, a length and a 1-byte packet
    number, padded to `size` bytes as a client's first flight must be. Its payload is not
    encrypted: it is only read by a load balancer that routes on the header."""
    head = bytes([0xC0]) + (1).to_bytes(4, "big")
    head += bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid + b"\x00"
    rest = size - len(head) - 2
    return head + (0x4000 | rest).to_bytes(2, "big") + b"\x00" + bytes(rest - 1)


def make_test_ca(directory):
    """A CA and a server certificate for 127.0.0.1 and localhost, made with the openssl
    command in `directory`; returns the paths (ca.pem, api.crt, api.key)."""
    ca, ca_key = os.path.join(directory, "ca.pem"), os.path.join(directory, "ca.key")
    crt, key = os.path.join(directory, "api.crt"), os.path.join(directory, "api.key")
    csr, ext = os.path.join(directory, "api.csr"), os.path.join(directory, "api.ext")
    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2",
            "-subj", "/CN=fulcrum SDK test CA")
    openssl("req", "-new", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    with open(ext, "w") as f:
        f.write("subjectAltName = IP:127.0.0.1, DNS:localhost\n"
                "extendedKeyUsage = serverAuth\n"
                "basicConstraints = critical, CA:FALSE\n"
                "keyUsage = critical, digitalSignature\n")
    openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
            "-out", crt, "-days", "2", "-extfile", ext)
    return ca, crt, key


class TestCA:
    """A CA made with the openssl command in a temporary directory, issuing server
    certificates for DNS names, and a TLS client that trusts only it."""

    def __init__(self, name="fulcrum SDK test CA"):
        self.dir = tempfile.mkdtemp(prefix="fulcrum-ca-")
        self.cert = os.path.join(self.dir, "ca.pem")
        self.key = os.path.join(self.dir, "ca.key")
        self._n = 0
        self._openssl("req", "-x509", *self._EC, "-keyout", self.key, "-out", self.cert,
                      "-days", "2", "-subj", f"/CN={name}")

    _EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    @staticmethod
    def _openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    def issue(self, dns_names, days=2):
        """A certificate for `dns_names` (the first is also its CN): (chain PEM, key PEM)."""
        self._n += 1
        base = os.path.join(self.dir, f"leaf{self._n}")
        crt, key, csr, ext = (base + s for s in (".crt", ".key", ".csr", ".ext"))
        self._openssl("req", "-new", *self._EC, "-keyout", key, "-out", csr,
                      "-subj", f"/CN={dns_names[0]}")
        with open(ext, "w") as f:
            f.write("subjectAltName = " + ", ".join(f"DNS:{n}" for n in dns_names) + "\n"
                    "extendedKeyUsage = serverAuth\n"
                    "basicConstraints = critical, CA:FALSE\n"
                    "keyUsage = critical, digitalSignature\n")
        self._openssl("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
                      "-CAcreateserial", "-out", crt, "-days", str(days), "-extfile", ext)
        with open(crt) as c, open(key) as k:
            return c.read(), k.read()

    def request(self, port, server_name, path="/", timeout=5, verify_name=True):
        """One HTTPS GET to 127.0.0.1:port asking for `server_name` (SNI and Host), the
        served certificate's chain checked against this CA by Python's ssl, and its name
        unless `verify_name` is false. Returns (the served certificate as
        `SSLSocket.getpeercert()` decodes it, status, body)."""
        ctx = ssl.create_default_context(cafile=self.cert)
        ctx.check_hostname = verify_name
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=server_name) as tls:
                cert = tls.getpeercert()
                tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {server_name}\r\n"
                            "Connection: close\r\n\r\n".encode())
                resp = http.client.HTTPResponse(tls)
                resp.begin()
                return cert, resp.status, resp.read().decode()

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class Fulcrum:
    """A running `fulcrum serve` with its own data directory and API port.

    `config` is extra fulcrum.toml text appended after the [api] section (for example
    an `[oci]` section with keys). The native API token is `TOKEN`. With `tls`, the API
    speaks only https, with a certificate from a test CA whose certificate is `ca_file`
    (`api_url` is then https://127.0.0.1:port).
    """

    def __init__(self, config="", tls=False):
        self.dir = tempfile.mkdtemp(prefix="fulcrum-sdk-")
        self.api_port = free_port()
        self.ca_file = None
        self.ssl_context = None
        tls_config = ""
        if tls:
            self.ca_file, crt, key = make_test_ca(self.dir)
            self.ssl_context = ssl.create_default_context(cafile=self.ca_file)
            tls_config = f'tls_cert = "{crt}"\ntls_key = "{key}"\n'
        scheme = "https" if tls else "http"
        self.api_url = f"{scheme}://127.0.0.1:{self.api_port}"
        path = os.path.join(self.dir, "fulcrum.toml")
        with open(path, "w") as f:
            f.write(
                f'data_dir = "{self.dir}/data"\n'
                f"[api]\n"
                f'listen = "127.0.0.1:{self.api_port}"\n'
                f"rate_per_second = 10000.0\nrate_burst = 10000\n"
                f'tokens = [{{ name = "sdk", token = "{TOKEN}" }}]\n'
                f"{tls_config}"
                f"{config}\n"
            )
        binary = os.environ.get("FULCRUM_BIN") or os.path.join(
            os.path.dirname(__file__), "..", "target", "debug", "fulcrum"
        )
        self.log = open(os.path.join(self.dir, "fulcrum.log"), "w")
        self.process = subprocess.Popen(
            [binary, "serve", "--config", path],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "FULCRUM_LOG": os.environ.get("FULCRUM_LOG", "info")},
        )
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(self.api_url + "/v1/health", timeout=1,
                                            context=self.ssl_context) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.process.poll() is not None or time.time() > deadline:
                self.dump_log()
                raise RuntimeError("fulcrum did not start")
            time.sleep(0.05)

    def native(self, method, path, body=None):
        """Calls the native API; returns (status, parsed JSON or None)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.api_url + path, data=data, method=method)
        req.add_header("authorization", f"Bearer {TOKEN}")
        if data is not None:
            req.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.ssl_context) as r:
                text = r.read()
                return r.status, json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            text = e.read()
            return e.code, json.loads(text) if text else None

    def dump_log(self):
        self.log.flush()
        with open(self.log.name) as f:
            sys.stderr.write("---- fulcrum log (last 80 lines) ----\n")
            sys.stderr.writelines(f.readlines()[-80:])

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def native(api_url, method, path, body=None, token=TOKEN, headers=None):
    """One call to fulcrum's native API (with `token`, if any); returns (status, JSON body or
    None, headers). A body that is not JSON (an error from a proxy in between) reads as None."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(api_url + path, data=data, method=method)
    if token:
        req.add_header("authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("content-type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, text, hdrs = r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        status, text, hdrs = e.code, e.read(), e.headers
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        parsed = None
    return status, parsed, hdrs


def get(url, headers=None, timeout=5):
    """One plain HTTP GET on a fresh connection; returns (status, body text, headers)."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def spread(url, n, headers=None):
    """Sends n GETs, each on a new connection; returns {body: count} (errors as 'status:N')."""
    counts = {}
    for _ in range(n):
        status, body, _ = get(url, headers)
        key = body if status == 200 else f"status:{status}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def wait_until(predicate, timeout=10, interval=0.05, what="condition"):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def wait_port(port, timeout=10):
    def open_():
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        return False

    wait_until(open_, timeout, what=f"port {port} to accept")


def check(condition, message):
    if not condition:
        raise AssertionError(message)


class Steps:
    """Runs named steps in order, prints each result, and exits 1 if any failed.

    Steps share state through the object the test passes around; a failed step stops
    the run (later steps usually depend on earlier ones).
    """

    def __init__(self, title):
        self.title = title
        self.steps = []

    def step(self, fn):
        self.steps.append(fn)
        return fn

    def run(self, *args):
        print(f"== {self.title}")
        started = time.time()
        for fn in self.steps:
            t0 = time.time()
            try:
                fn(*args)
            except Exception:
                print(f"FAIL {fn.__name__} ({time.time() - t0:.2f}s)")
                traceback.print_exc()
                return False
            print(f"ok   {fn.__name__} ({time.time() - t0:.2f}s)")
        print(f"== {self.title}: {len(self.steps)} steps passed in {time.time() - started:.1f}s")
        return True
