"""How `spine-cds serve` serves: gunicorn, pre-fork, with gevent workers.

Slow clients cost a socket, not a worker. A sync worker reads a request and writes its answer
itself, one connection at a time: two connections sending their headers a byte a second held
both workers until gunicorn's 30 s timeout. Here each connection is a greenlet of a gevent worker:
a connection waiting for its headers, its body or for the client to read the answer only waits on
its socket, while the worker goes on running the rules for the others.

- The request line and headers must arrive within `SPINE_CDS_HEADER_TIMEOUT` (also the longest a
  kept-alive connection may wait idle for its next request); past it the connection is closed.
- The body is read in full, within `SPINE_CDS_BODY_TIMEOUT`, before the application runs
  (`BufferedBody`); past it the answer is a 408 OperationOutcome and the connection is closed.
- The rules run one request at a time per worker, in the order the requests were read in full
  (`GATE`, a FIFO semaphore), and a worker with a request running or waiting to run stops
  accepting connections until it has none: as with sync workers, a busy worker never takes a new
  connection that a free worker could have taken, while the connections it already accepted go on
  being read. Measured with bench/run.py --quick on one machine (2026-12-02): sync workers, typical
  record, 8 clients: p95 153-170 ms; gevent with kept-alive connections: 351-514 ms, p99 1.35 s;
  one request per connection: 177 ms; with the gate too: 173 ms (p99 212), and the repeat workload
  at 8 clients 274 req/s against 169 (its p95 38 ms against 59).
- The answer is written by the connection's greenlet, each write bounded by the send timeout;
  then the connection is closed (one request per connection, as with sync workers: a kept-alive
  connection stays with its worker, busy or not, and 8 clients' p95 went from 68 to 280 ms).
- Malformed HTTP is answered with a JSON OperationOutcome (400, 414, 431...), never HTML, and
  the log names the kind of error only, never the bytes received (they may hold a token).

gevent must patch the standard library before anything else is imported (the app is loaded
before the fork): `patch()` is the first thing `spine-cds serve` does. psycopg notices the
patching and waits cooperatively; requests and SQLAlchemy use the patched sockets and locks.
"""
from __future__ import annotations

import io
import json
import logging
import socket

log = logging.getLogger("spine_cds.serving")

# Set by `configure` in the master before the fork; the workers inherit them.
LIMITS = {"header_timeout": 10.0, "body_timeout": 30.0, "send_timeout": 60.0}
WORKER_CONNECTIONS = 1000
WORKER_CLASS = "service.serving.Worker"
CLOSE_AFTER_ANSWER = True


def patch() -> None:
    from gevent import monkey

    monkey.patch_all()


def configure(header_timeout: float, body_timeout: float, send_timeout: float) -> None:
    LIMITS.update(header_timeout=header_timeout, body_timeout=body_timeout, send_timeout=send_timeout)


def prepare_metrics(data_dir) -> None:
    """In the master, before the app is built (so before the fork): every process's metrics go to files
    of one directory, which `GET /metrics` merges, whichever worker answers (service/metrics.py)."""
    from . import metrics

    metrics.prepare_multiprocess(data_dir)


def child_exit(server, worker) -> None:
    """gunicorn, in the master, when a worker has exited: its counters stay (they are totals)."""
    from . import metrics

    metrics.process_dead(worker.pid)


def _outcome(status: int, reason: str, code: str, diagnostics: str) -> bytes:
    body = json.dumps({"resourceType": "OperationOutcome",
                       "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}]}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/fhir+json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    return head + body


class AppGate:
    """One request at a time in the application per worker, first come first served, and the
    worker's listeners paused while any request runs or waits (see the module's docstring). Inert
    until a gevent worker installs it (tests and the in-process servers run the app directly)."""

    def __init__(self):
        self._lock = None
        self._pending = 0
        self._pause = self._resume = lambda: None

    def install(self, pause, resume) -> None:
        from gevent.lock import Semaphore  # FIFO: waiters are woken in the order they came

        self._lock, self._pause, self._resume = Semaphore(1), pause, resume

    def __enter__(self):
        if self._lock is not None:
            self._pending += 1
            if self._pending == 1:
                self._pause()
            self._lock.acquire()
        return self

    def __exit__(self, *exc):
        if self._lock is not None:
            self._lock.release()
            self._pending -= 1
            if self._pending == 0:
                self._resume()
        return False


GATE = AppGate()


class BufferedBody:
    """WSGI middleware: the whole body is read (within the body timeout, at most one byte more
    than the application accepts) before the application sees the request."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def __call__(self, environ, start_response):
        import gevent

        length = environ.get("CONTENT_LENGTH") or ""
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked:
            limit = self.max_bytes + 1
        elif length.isdigit() and 0 < int(length) <= self.max_bytes:
            limit = int(length)
        else:  # no body, or one the application refuses by its Content-Length alone (413)
            with GATE:
                return self.app(environ, start_response)
        stream, chunks, received, complete = environ["wsgi.input"], [], 0, False
        with gevent.Timeout(LIMITS["body_timeout"], False):
            while received < limit:
                chunk = stream.read(min(65536, limit - received))
                if not chunk:
                    break
                chunks.append(chunk)
                received += len(chunk)
            complete = True
        if not complete:
            log.warning("request body not received within %s s: 408, connection closed", LIMITS["body_timeout"])
            sock = environ.get("gunicorn.socket")
            if sock is not None:  # nothing more is read from this connection: it closes after the 408
                try:
                    sock.shutdown(socket.SHUT_RD)
                except OSError:
                    pass
            body = json.dumps({"resourceType": "OperationOutcome", "issue": [{
                "severity": "error", "code": "timeout",
                "diagnostics": f"the request body did not arrive within {LIMITS['body_timeout']:g} s"}]}).encode()
            start_response("408 Request Timeout", [("Content-Type", "application/fhir+json"),
                                                   ("Content-Length", str(len(body))), ("Connection", "close")])
            return [body]
        body = b"".join(chunks)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ["wsgi.input_terminated"] = True
        with GATE:  # the answer (a list of bytes) is written after the gate, by the connection's greenlet
            return self.app(environ, start_response)


def _worker_class():
    import gevent
    from gunicorn.http import errors
    from gunicorn.workers.base_async import AsyncWorker
    from gunicorn.workers.ggevent import GeventWorker

    statuses = {errors.LimitRequestLine: (414, "URI Too Long", "too-long"),
                errors.LimitRequestHeaders: (431, "Request Header Fields Too Large", "too-long"),
                errors.UnsupportedTransferCoding: (501, "Not Implemented", "not-supported"),
                errors.ExpectationFailed: (417, "Expectation Failed", "not-supported")}

    class Waiting:
        """Around the reading of each request's line and headers (and the idle wait before it on a
        kept-alive connection): past the header timeout the connection is closed. A connection
        waiting here when the worker is told to stop is closed at once: nothing of its next
        request has been answered, and a graceful stop need not wait for idle clients."""

        def __init__(self, worker):
            self.worker = worker
            self.timeout = gevent.Timeout(LIMITS["header_timeout"], False)

        def __enter__(self):
            if not self.worker.alive:
                raise gevent.GreenletExit
            self.worker.waiting.add(gevent.getcurrent())
            return self.timeout.__enter__()

        def __exit__(self, *exc):
            self.worker.waiting.discard(gevent.getcurrent())
            return self.timeout.__exit__(*exc)

    class Worker(GeventWorker):
        def init_process(self):
            self.waiting = set()
            super().init_process()

        def run(self):
            # GeventWorker.run makes its StreamServers itself: the class it uses is replaced, in this
            # worker process only, by one that records them, so that GATE can pause their accepting.
            from gunicorn.workers import ggevent

            servers = []

            class Server(ggevent.StreamServer):
                def start(self):
                    super().start()
                    servers.append(self)

            def pause():
                for server in servers:
                    server.stop_accepting()

            def resume():
                for server in servers:
                    if not server.closed:
                        server.start_accepting()

            ggevent.StreamServer = Server
            GATE.install(pause, resume)
            super().run()

        def timeout_ctx(self):
            return Waiting(self)

        def handle_exit(self, sig, frame):
            super().handle_exit(sig, frame)
            gevent.spawn(self._close_waiting)

        def _close_waiting(self):
            for greenlet in list(self.waiting):
                greenlet.kill(block=False)

        def handle(self, listener, client, addr):
            client.settimeout(LIMITS["send_timeout"])  # each read and write; a stalled reader is dropped
            AsyncWorker.handle(self, listener, client, addr)

        def handle_request(self, listener_name, req, sock, addr):
            # One request per connection, as with the sync workers: a kept-alive connection would
            # stay with the worker that accepted it, busy or not, while a new connection is
            # accepted by a worker that is free (a worker running the rules does not accept).
            if CLOSE_AFTER_ANSWER:
                req.must_close = True
            super().handle_request(listener_name, req, sock, addr)

        def handle_error(self, req, client, addr, exc):
            if isinstance(exc, gevent.GreenletExit):  # an idle connection closed at shutdown
                return
            if isinstance(exc, errors.ParseException):
                status, reason, code = next((v for k, v in statuses.items() if isinstance(exc, k)),
                                            (400, "Bad Request", "invalid"))
                # The kind of error only: its text quotes what the client sent.
                self.log.warning("malformed HTTP request (%s): %s", type(exc).__name__, status)
                message = f"malformed HTTP request ({type(exc).__name__})"
            else:
                status, reason, code = 500, "Internal Server Error", "exception"
                self.log.error("error handling a request: %s", type(exc).__name__)
                message = "internal error; it has been logged"
            try:
                client.sendall(_outcome(status, reason, code, message))
            except Exception:  # noqa: BLE001 - the client has gone
                pass

    return Worker


def __getattr__(name):  # gunicorn loads "service.serving.Worker" in the worker, after the patch
    if name == "Worker":
        globals()["Worker"] = worker = _worker_class()
        return worker
    raise AttributeError(name)
