"""Slow clients cost a socket, not a worker: against a served instance (`spine-cds serve`,
2 workers, over HTTP).

- Slow headers: connections that send a request's headers one byte every second (reconnecting
  when the server closes them), and slow readers: connections that ask for large answers (16
  pipelined GET /openapi.json, 270 KB, with a 1,460-byte segment size and a 4 KB receive
  buffer, so the answer does not fit in the kernel's buffers) and read 512 bytes a second. While
  they are connected, legitimate hook calls (2 clients) must keep their p95 within 50 ms of the
  p95 measured without them, on the same server. Suite: 64 slow-header connections and 16 slow
  readers, 8 s per phase; `make harden`: 256 and 64 (SPINE_CDS_TEST_SLOW_HEADERS,
  SPINE_CDS_TEST_SLOW_READERS, SPINE_CDS_TEST_SLOW_SECONDS). Figures go to
  test-artifacts/slow-clients.json.
- A connection that never finishes its headers is closed after SPINE_CDS_HEADER_TIMEOUT.
- A body sent slowly past SPINE_CDS_BODY_TIMEOUT gets a 408 OperationOutcome and is closed.
- Malformed HTTP gets a JSON OperationOutcome, never HTML.
No worker is restarted by any of it.
"""
from __future__ import annotations

import json
import os
import socket
import statistics
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from .served import Gunicorn
from .support import FIXTURES, ROOT

pytestmark = pytest.mark.served

SLOW_HEADERS = int(os.environ.get("SPINE_CDS_TEST_SLOW_HEADERS", "64"))
SLOW_READERS = int(os.environ.get("SPINE_CDS_TEST_SLOW_READERS", "16"))
PHASE_SECONDS = float(os.environ.get("SPINE_CDS_TEST_SLOW_SECONDS", "8"))
LEGIT_CLIENTS = 2
HEADER_TIMEOUT = 3.0
BODY_TIMEOUT = 3.0
PIPELINED = 16
ARTIFACT = ROOT / "test-artifacts" / "slow-clients.json"
HOOK = "/cds-services/spine-coding-order-sign"
HOOK_BODY = json.loads((FIXTURES / "order-sign_c1-c2-slip_coded-m43.10.json").read_text())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    gunicorn = Gunicorn(tmp_path_factory.mktemp("slow-clients"), env={
        "SPINE_CDS_HEADER_TIMEOUT": str(HEADER_TIMEOUT), "SPINE_CDS_BODY_TIMEOUT": str(BODY_TIMEOUT)})
    yield gunicorn
    gunicorn.stop()


def _connect(port: int, small: bool = False) -> socket.socket:
    s = socket.socket()
    if small:  # a client on a slow link: small segments, a small window
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1460)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    return s


class Attack:
    """Slow-header connections and slow readers, driven by one thread (non-blocking sockets)."""

    def __init__(self, port: int, slow_headers: int, slow_readers: int):
        self.port = port
        self.stop = threading.Event()
        self.headers_request = (f"POST {HOOK} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                                f"X-Padding: {'a' * 200}\r\nContent-Length: 2\r\n\r\n{{}}").encode()
        one = b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        self.reader_request = one * PIPELINED
        self.n_headers, self.n_readers = slow_headers, slow_readers
        self.headers: dict[socket.socket, int] = {}  # socket -> bytes of the request sent
        self.readers: dict[socket.socket, int] = {}  # socket -> bytes of the answers read
        self.closed_by_server = 0
        self.reader_bytes = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        for _ in range(self.n_headers):
            self.headers[_connect(self.port)] = 0
        for _ in range(self.n_readers):
            s = _connect(self.port, small=True)
            s.setblocking(True)
            s.sendall(self.reader_request)
            s.setblocking(False)
            self.readers[s] = 0
        self.thread.start()

    def ready(self) -> bool:
        return all(n > 0 for n in self.readers.values())  # every slow reader has its answer coming

    def _run(self) -> None:
        while not self.stop.is_set():
            for s in list(self.headers):  # one more byte of the request, reconnect when closed
                sent = self.headers[s]
                try:
                    if sent < len(self.headers_request) - 4:  # never the final CRLF CRLF
                        s.send(self.headers_request[sent:sent + 1])
                        self.headers[s] = sent + 1
                    if s.recv(65536) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    pass
                except OSError:
                    self.closed_by_server += 1
                    s.close()
                    del self.headers[s]
                    self.headers[_connect(self.port)] = 0
            for s in list(self.readers):  # read 512 bytes a second
                try:
                    data = s.recv(512)
                    if data == b"":
                        raise ConnectionResetError
                    self.readers[s] += len(data)
                    self.reader_bytes += len(data)
                except BlockingIOError:
                    pass
                except OSError:
                    s.close()
                    del self.readers[s]
            self.stop.wait(1.0)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        for s in list(self.headers) + list(self.readers):
            s.close()


def _legit(url: str, seconds: float, clients: int) -> list[float]:
    """Closed-loop hook calls from `clients` threads for `seconds`: the latencies in ms."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client():
        session = requests.Session()
        while time.monotonic() < stop:
            body = dict(HOOK_BODY, hookInstance=str(uuid.uuid4()))
            started = time.perf_counter()
            try:
                response = session.post(url + HOOK, json=body, timeout=30)
                ok = response.status_code == 200
            except requests.RequestException as exc:
                ok, response = False, exc
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                (latencies.append(elapsed) if ok else errors.append(str(response)[:80]))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [], errors[:3]
    return latencies


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[94]


def _server_send_queues(port: int) -> dict[int, int]:
    """The kernel's send queue (bytes) of each server-side loopback socket of `port`, by the
    client's port (/proc/net/tcp)."""
    queues = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, tx = fields[1], fields[2], fields[4].split(":")[0]
        if int(local.split(":")[1], 16) == port:
            queues[int(remote.split(":")[1], 16)] = int(tx, 16)
    return queues


def _held_in_server_process(port: int, readers: dict, answer: int) -> list[int]:
    """For each slow reader: bytes of its answers that are neither read, nor in its receive queue,
    nor in the server's kernel send queue: still in the server process, waiting for the client.
    (A sync worker would be blocked writing them.)"""
    queues = _server_send_queues(port)
    held = []
    for s, read in readers.items():
        try:
            unread = len(s.recv(1 << 20, socket.MSG_PEEK))
        except BlockingIOError:
            unread = 0
        held.append(answer - read - unread - queues.get(s.getsockname()[1], 0))
    return held


def _round(server, slow_headers: int, slow_readers: int) -> dict:
    baseline = _legit(server.url, PHASE_SECONDS, LEGIT_CLIENTS)
    attack = Attack(server.port, slow_headers, slow_readers)
    attack.start()
    try:
        deadline = time.monotonic() + 15
        while not attack.ready() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert attack.ready(), "the slow readers got no answer: the server is not serving them"
        during = _legit(server.url, PHASE_SECONDS, LEGIT_CLIENTS)
        open_headers, open_readers = len(attack.headers), len(attack.readers)
        answer = len(requests.get(server.url + "/openapi.json", timeout=5).content) * PIPELINED
        held = _held_in_server_process(server.port, attack.readers, answer)
    finally:
        attack.close()
    return {
        "baseline": {"calls": len(baseline), "p50_ms": round(statistics.median(baseline), 1),
                     "p95_ms": round(_p95(baseline), 1)},
        "under_attack": {"calls": len(during), "p50_ms": round(statistics.median(during), 1),
                         "p95_ms": round(_p95(during), 1)},
        "p95_delta_ms": round(_p95(during) - _p95(baseline), 1),
        "slow_header_connections_open": open_headers,
        "slow_header_connections_closed_by_header_timeout": attack.closed_by_server,
        "slow_readers_open": open_readers,
        "slow_reader_answer_bytes": answer,
        "slow_readers_with_answer_held_in_server_process": sum(1 for h in held if h > 0),
        "min_bytes_held_in_server_process": min(held) if held else 0,
    }


def test_slow_headers_and_slow_readers_do_not_slow_legitimate_calls(server):
    """The p95 of legitimate calls with the slow clients connected against without them. The
    machine is shared (other test runs, other work): a round whose delta is over 50 ms is measured
    again, twice at most, and every round is reported. A server that gives a worker to a slow
    client fails every round (its legitimate calls wait for the header timeout, or time out)."""
    _legit(server.url, 2, LEGIT_CLIENTS)  # warm the connections and the caches
    pids = server.workers_pids()
    rounds = []
    for _ in range(3):
        rounds.append(_round(server, SLOW_HEADERS, SLOW_READERS))
        if rounds[-1]["p95_delta_ms"] < 50:
            break
    figures = {"slow_header_connections": SLOW_HEADERS, "slow_readers": SLOW_READERS,
               "legit_clients": LEGIT_CLIENTS, "phase_seconds": PHASE_SECONDS, "header_timeout": HEADER_TIMEOUT,
               **rounds[-1], "rounds": len(rounds), "p95_delta_ms_by_round": [r["p95_delta_ms"] for r in rounds],
               "worker_restarts": 0 if server.workers_pids() == pids else 1}
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    for r in rounds:
        assert r["slow_header_connections_open"] == SLOW_HEADERS and r["slow_readers_open"] == SLOW_READERS
        # the slow readers really hold answers the kernel could not take: the rest waits in the server
        assert r["slow_readers_with_answer_held_in_server_process"] == SLOW_READERS, r
    assert figures["p95_delta_ms"] < 50, figures
    assert server.workers_pids() == pids


def _closed_within(s: socket.socket, seconds: float) -> tuple[float | None, bytes]:
    """Seconds until the server closes `s` (None if it did not within `seconds`), and what it sent."""
    started = time.monotonic()
    received = b""
    s.settimeout(0.25)
    while time.monotonic() - started < seconds:
        try:
            data = s.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return time.monotonic() - started, received
        if data == b"":
            return time.monotonic() - started, received
        received += data
    return None, received


def test_unfinished_headers_are_closed_after_the_header_timeout(server):
    s = socket.create_connection(("127.0.0.1", server.port))
    stop = threading.Event()

    def trickle():  # a byte every 0.3 s, never the end of the headers
        line = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 1000
        for i in range(len(line)):
            if stop.wait(0.3):
                return
            try:
                s.send(line[i:i + 1])
            except OSError:
                return

    threading.Thread(target=trickle, daemon=True).start()
    try:
        started = time.monotonic()
        closed, received = _closed_within(s, HEADER_TIMEOUT + 5)
        # the server answers others meanwhile
        assert requests.get(server.url + "/healthz", timeout=2).status_code == 200
    finally:
        stop.set()
        s.close()
    assert closed is not None, "the connection was still open 5 s after the header timeout"
    assert HEADER_TIMEOUT - 0.5 <= closed <= HEADER_TIMEOUT + 1.5, closed
    assert received == b""  # closed without an answer (no request was ever complete)
    assert time.monotonic() - started < HEADER_TIMEOUT + 5


def test_a_slow_body_past_the_body_timeout_gets_408_and_is_closed(server):
    pids = server.workers_pids()
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(f"POST {HOOK} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              f"Content-Length: 1000\r\n\r\n".encode())
    stop = threading.Event()

    def trickle():
        while not stop.wait(0.3):
            try:
                s.send(b" ")
            except OSError:
                return

    threading.Thread(target=trickle, daemon=True).start()
    try:
        closed, received = _closed_within(s, BODY_TIMEOUT + 5)
        assert requests.get(server.url + "/healthz", timeout=2).status_code == 200
    finally:
        stop.set()
        s.close()
    assert closed is not None and closed <= BODY_TIMEOUT + 1.5, closed
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), received[:200]
    outcome = json.loads(body)
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "timeout"
    assert server.workers_pids() == pids


def test_a_body_in_full_within_the_timeout_is_answered(server):
    """The buffering does not change an ordinary call, sent slowly but within the body timeout."""
    raw = json.dumps(dict(HOOK_BODY, hookInstance=str(uuid.uuid4()))).encode()
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(f"POST {HOOK} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(raw)}\r\nConnection: close\r\n\r\n".encode())
    for i in range(0, len(raw), len(raw) // 4 + 1):  # in four parts over ~1.2 s
        time.sleep(0.3)
        s.sendall(raw[i:i + len(raw) // 4 + 1])
    closed, received = _closed_within(s, 10)
    s.close()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), received[:200]
    assert json.loads(body)["cards"]


@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nBad Header Name: x\r\n\r\n",
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /cds-services HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
], ids=["request-line", "version", "header-name", "uri-too-long", "chunk-size"])
def test_malformed_http_gets_a_json_operation_outcome(server, raw):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(raw)
        closed, received = _closed_within(s, 5)
    head, _, body = received.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    assert 400 <= status < 500, received[:200]
    assert b"text/html" not in head.lower()
    assert json.loads(body)["resourceType"] == "OperationOutcome"
