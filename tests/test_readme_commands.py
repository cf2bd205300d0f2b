"""Every shell command of README.md runs verbatim in a fresh copy of the repository (issue 12).

The README's shell blocks (```sh) are read as the shell reads them: a command continues over
backslash-newlines and open quotes; `# ...` lines under a command are the output it shows; in a
block written with `$ ` prompts, the lines under a command are its output. Each command is run
with bash, as written, in a copy of the repository's tracked files (the working tree's versions,
as a fresh clone of them would have), with nothing from this environment's SPINE_CDS_* settings:

- **one-shot commands** (`spine-cds evaluate`, `check-config`, `audit`, `make accuracy` ...) must
  exit 0; where the README shows their output after a `$ ` prompt, the output must be exactly that;
- **serving commands** (`make run`, `spine-cds serve`) are started, must answer `/readyz` 200, and
  are stopped at the end (each after the first on a port and a data folder of its own, so that the
  instance answering is the one the command started); the `curl` examples run against the instance the README's first serving
  command started, and must answer JSON that holds what the README shows under them (its quoted
  strings, except those abbreviated with `...`, and its `"key": number` pairs);
- **Docker** commands run only where a Docker engine answers (`docker info`); elsewhere they are
  skipped, saying so;
- **excluded**, each with its reason in EXCLUDED: `make test` and the minutes-long measurement runs.

A command the test does not know how to run fails the test: add it to a kind below (or to EXCLUDED,
with a reason) when adding it to the README.

The copy shares this virtualenv instead of installing one (`make run` would spend minutes in pip):
the copy's `.venv` links to this one's files, its stamp `.venv/.installed` is newer than the copy's
pyproject.toml (so `make` installs nothing), and PYTHONPATH points at the copy, so every command
runs the copy's code (the editable install's finder comes after PYTHONPATH). The served instance
listens on 127.0.0.1:8080 as the README says; when something else on this shared machine holds that
port, it is served on a free port (SPINE_CDS_PORT, which `make run` honours) and that port is the one
change made to the curl commands.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from .support import ROOT

README = ROOT / "README.md"
VENV = Path(sys.executable).parent.parent  # the virtualenv running the tests (not resolved: a venv's python is a link)
TIMEOUT = 120  # seconds for one command
READY_WITHIN = 120  # seconds for a served instance to answer /readyz

EXCLUDED = {
    "make test": "the whole test suite, which this test is part of",
    "make bench": "about 6 minutes of measurement on the shared machine; tests/test_bench.py runs bench/run.py --smoke",
    "make worst-case": "minutes of measurement; tests/test_bench.py runs bench/worst_case.py --quick",
    "make harden": "about 5 minutes: the hardening tests, which the suite itself runs with suite-sized counts",
    ".venv/bin/python bench/audit_bench.py": "about 6 minutes of measurement (four audits of 20,000 patients); "
                                              "tests/test_audit.py runs both engines on small exports",
}
ONE_SHOT_SUBCOMMANDS = {"evaluate", "check-config", "audit", "purge", "migrate"}
ONE_SHOT_MAKE = {"make accuracy", "make check-config"}


# ------------------------------------------------------------------ reading the README
@dataclass
class Command:
    text: str                      # as written (continuation lines included)
    line: int                      # where it starts in README.md
    prompt: bool                   # written after `$ `: the output shown must match exactly
    shown: list[str] = field(default_factory=list)  # the output the README shows

    @property
    def words(self) -> list[str]:
        return shlex.split(self.text, comments=True)

    @property
    def id(self) -> str:
        return f"L{self.line}:{' '.join(self.words)[:60]}"


def _complete(text: str) -> bool:
    if text.rstrip().endswith("\\"):
        return False
    try:
        shlex.split(text, comments=True)
    except ValueError:  # an open quote: the command goes on
        return False
    return True


def readme_commands(text: str | None = None) -> list[Command]:
    text = README.read_text() if text is None else text
    commands: list[Command] = []
    for block in re.finditer(r"^( *)```(?:sh|bash|shell|console)[ \t]*\n(.*?)^\1```", text, re.M | re.S):
        indent = len(block.group(1))
        first = text.count("\n", 0, block.start(2)) + 1
        lines = [line[indent:] if line[:indent].strip() == "" else line for line in block.group(2).splitlines()]
        prompted = any(line.startswith("$ ") for line in lines)
        current: Command | None = None
        pending: list[str] = []
        for number, line in enumerate(lines, first):
            if pending:
                pending.append(line)
                if _complete("\n".join(pending)):
                    current.text = "\n".join(pending)
                    pending = []
                continue
            if prompted:
                if line.startswith("$ "):
                    current = Command(line[2:], number, True)
                    commands.append(current)
                    if not _complete(current.text):
                        pending = [current.text]
                elif current is not None:
                    current.shown.append(line)
                continue
            if not line.strip():
                continue
            if line.lstrip().startswith("#"):
                if current is not None:
                    current.shown.append(line.lstrip()[1:].strip())
                continue
            current = Command(line, number, False)
            commands.append(current)
            if not _complete(line):
                pending = [line]
        if pending:
            raise AssertionError(f"README.md line {current.line}: the command never ends (an open quote or a "
                                 "trailing backslash)")
    for command in commands:
        while command.prompt and command.shown and not command.shown[-1].strip():
            command.shown.pop()
    return commands


def kind_of(command: Command) -> tuple[str, str]:
    """(kind, why): how the test runs it, or why it does not."""
    words = command.words
    joined = " ".join(words)
    if joined in EXCLUDED:
        return "excluded", EXCLUDED[joined]
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        words = words[1:]  # VAR=value in front of a command
    if not words:
        return "unknown", "no command"
    program = words[0]
    if words[:2] == ["make", "run"] or (program.endswith("spine-cds") and words[1:2] == ["serve"]):
        return "serve", "started, /readyz checked, stopped"
    if program.endswith("spine-cds") and words[1:2] and words[1] in ONE_SHOT_SUBCOMMANDS:
        return "run", "run to its end"
    if " ".join(words[:2]) in ONE_SHOT_MAKE:
        return "run", "run to its end"
    if program == "curl":
        return "curl", "against the served instance"
    if program == "docker":
        return "docker", "needs a Docker engine"
    return "unknown", "this test does not know how to run it"


COMMANDS = readme_commands()


# ------------------------------------------------------------------ the copy and its environment
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    """The repository's tracked files (as in the working tree), and a .venv that links to this one."""
    target = tmp_path_factory.mktemp("readme") / "spine-coding-cds"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        source = ROOT / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name, follow_symlinks=False)
    venv = target / ".venv"
    venv.mkdir()
    for entry in VENV.iterdir():
        if entry.name != ".installed":
            (venv / entry.name).symlink_to(entry)
    hour_ago = time.time() - 3600
    os.utime(target / "pyproject.toml", (hour_ago, hour_ago))
    (venv / ".installed").touch()  # newer than pyproject.toml: make installs nothing
    return target


@pytest.fixture(scope="module")
def port() -> int:
    return 8080 if _port_free(8080) else _free_port()


@pytest.fixture(scope="module")
def env(copy, port) -> dict:
    # As a fresh shell has it: no settings of ours, and none of make's own variables (under `make test`,
    # MAKELEVEL and MAKEFLAGS would make the README's `make` commands print "Entering directory").
    make_vars = {"MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEFILES", "MAKEOVERRIDES"}
    out = {k: v for k, v in os.environ.items()
           if not k.startswith("SPINE_CDS_") and k != "PYTHONPATH" and k not in make_vars}
    out["PATH"] = f"{copy / '.venv' / 'bin'}{os.pathsep}{out.get('PATH', '')}"
    out["PYTHONPATH"] = str(copy)
    if port != 8080:
        out["SPINE_CDS_PORT"] = str(port)
    return out


def _as_run(text: str, port: int) -> str:
    return text if port == 8080 else text.replace("127.0.0.1:8080", f"127.0.0.1:{port}")


def _run(command: Command, copy: Path, env: dict, port: int) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", _as_run(command.text, port)], cwd=copy, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT)


class Served:
    def __init__(self, command: Command, copy: Path, env: dict, port: int):
        self.command, self.url = command, f"http://127.0.0.1:{port}"
        self.log = copy / f"served-L{command.line}.log"
        self.process = subprocess.Popen(["bash", "-c", command.text], cwd=copy, env=env, start_new_session=True,
                                        stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        self.ready = None
        ends = time.monotonic() + READY_WITHIN
        while time.monotonic() < ends and self.process.poll() is None:
            try:
                response = requests.get(self.url + "/readyz", timeout=2)
                if response.status_code == 200:
                    self.ready = response.json()
                    break
            except requests.RequestException:
                pass
            time.sleep(0.3)

    def tail(self) -> str:
        return self.log.read_text()[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def served(copy, env, port):
    """The README's first serving command (`make run`), started once for the curl examples."""
    first = next(c for c in COMMANDS if kind_of(c)[0] == "serve")
    instance = Served(first, copy, env, port)
    yield instance
    instance.stop()


# ------------------------------------------------------------------ the tests
def test_the_readme_commands_are_found():
    """The parser finds the commands a reader sees (a check on the parser, not on the README's wording)."""
    kinds = [kind_of(c)[0] for c in COMMANDS]
    texts = [" ".join(c.words) for c in COMMANDS]
    assert "make run" in texts and "make test" in texts
    assert kinds.count("serve") >= 1 and kinds.count("curl") >= 3 and kinds.count("run") >= 4
    assert any(c.prompt and c.shown for c in COMMANDS)  # the evaluate examples and their output
    feedback = next(c for c in COMMANDS if "/feedback" in c.text)
    assert feedback.text.count("\n") >= 4 and json.loads(feedback.words[feedback.words.index("-d") + 1])


def test_the_copy_runs_its_own_code_and_make_installs_nothing(copy, env):
    where = subprocess.run([".venv/bin/python", "-c", "import service, sys; print(service.__file__, sys.prefix)"],
                           cwd=copy, env=env, capture_output=True, text=True, timeout=60)
    module, prefix = where.stdout.split()
    assert Path(module).is_relative_to(copy) and Path(prefix) == copy / ".venv", where.stderr
    planned = subprocess.run(["make", "-n", "run"], cwd=copy, env=env, capture_output=True, text=True, timeout=60)
    assert planned.stdout.split("\n")[0].strip() == ".venv/bin/spine-cds serve" and "pip" not in planned.stdout


def test_every_readme_command_is_one_this_test_runs_or_excludes_with_a_reason():
    unknown = [f"README.md line {c.line}: {c.text!r}" for c in COMMANDS if kind_of(c)[0] == "unknown"]
    assert not unknown, ("README commands this test does not know how to run (add them to a kind, or to "
                         "EXCLUDED with a reason):\n" + "\n".join(unknown))


def test_the_parser_reads_prompts_continuations_and_shown_output():
    text = ("```sh\ncurl -s -X POST x \\\n  -d '{\"a\":\n 1}'\n# {\"received\": 1}\nmake run  # serves\n```\n"
            "  ```sh\n  $ spine-cds evaluate --text f.json\n  no cards\n\n  $ spine-cds check-config\n  ```\n")
    commands = readme_commands(text)
    assert [c.text for c in commands] == ["curl -s -X POST x \\\n  -d '{\"a\":\n 1}'", "make run  # serves",
                                          "spine-cds evaluate --text f.json", "spine-cds check-config"]
    assert commands[0].shown == ['{"received": 1}'] and commands[2].shown == ["no cards"] and not commands[3].shown
    assert [kind_of(c)[0] for c in commands] == ["curl", "serve", "run", "run"]
    assert kind_of(readme_commands("```sh\nrm -rf data\n```\n")[0])[0] == "unknown"
    with pytest.raises(AssertionError, match="never ends"):
        readme_commands("```sh\ncurl -d '{\n```\n")


def _shown_strings(shown: list[str]) -> tuple[list[str], dict]:
    """The quoted strings (not abbreviated with ...) and "key": number pairs of the shown output."""
    text = " ".join(shown)
    strings = [s for s in re.findall(r'"([^"]*)"', text) if "..." not in s]
    numbers = {k: int(v) for k, v in re.findall(r'"([^"]+)":\s*(-?\d+)\b', text)}
    return strings, numbers


@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_the_readme_command_runs_verbatim(command, copy, env, port, request):
    kind, why = kind_of(command)
    if kind == "unknown":
        pytest.fail(f"README.md line {command.line}: {why}: {command.text!r}")
    if kind == "excluded":
        pytest.skip(f"excluded: {why}")
    if kind == "serve":
        served = request.getfixturevalue("served")
        if served.command is command:
            instance = served
        else:  # beside the first (still serving the curl examples): a port and a data folder of its own
            own = _free_port()
            instance = Served(command, copy, dict(env, SPINE_CDS_PORT=str(own),
                                                  SPINE_CDS_DATA_DIR=str(copy / f"data-L{command.line}")), own)
        try:
            assert instance.ready is not None, f"no /readyz 200 within {READY_WITHIN} s:\n{instance.tail()}"
            assert requests.get(instance.url + "/healthz", timeout=5).status_code == 200
        finally:
            if instance is not served:
                instance.stop()
        return
    if kind == "curl":
        served = request.getfixturevalue("served")
        assert served.ready is not None, f"the served instance never answered /readyz:\n{served.tail()}"
        result = _run(command, copy, env, port)
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)
        strings, numbers = _shown_strings(command.shown)
        if "OperationOutcome" not in strings:
            assert not (isinstance(answer, dict) and answer.get("resourceType") == "OperationOutcome"), result.stdout
        for string in strings:
            assert json.dumps(string) in result.stdout or f'"{string}"' in result.stdout, (string, result.stdout[:2000])
        for key, value in numbers.items():
            assert isinstance(answer, dict) and answer.get(key) == value, (key, value, result.stdout[:2000])
        return
    if kind == "docker":
        usable = shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True,
                                                            timeout=30).returncode == 0
        if not usable:
            pytest.skip("no usable Docker engine here (`docker info` fails): the Docker commands are not run")
        _docker(command, copy, env)
        return
    result = _run(command, copy, env, port)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    if command.prompt and command.shown:
        assert result.stdout.rstrip("\n").splitlines() == [line.rstrip() for line in command.shown]
    words = command.words
    if "check-config" in words:
        assert isinstance(json.loads(result.stdout), dict)
    if "audit" in words:
        summary = json.loads(result.stdout)
        out = copy / words[words.index("--out") + 1] if "--out" in words else copy / "audit"
        assert summary["patients"] > 0 and summary["unreadable"] == 0, summary
        with open(out / "audit.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == summary["cards"] > 0 and (out / "audit.html").exists()


def _docker(command: Command, copy: Path, env: dict) -> None:
    """`docker build` to its end; `docker run` started, /readyz checked on its published port, removed."""
    words = command.words
    if words[1] == "build":
        result = subprocess.run(["bash", "-c", command.text], cwd=copy, env=env, capture_output=True, text=True,
                                timeout=1800)
        assert result.returncode == 0, result.stderr[-3000:]
        return
    image = words[-1]
    before = set(subprocess.run(["docker", "ps", "-q"], capture_output=True, text=True).stdout.split())
    process = subprocess.Popen(["bash", "-c", command.text], cwd=copy, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        published = words[words.index("-p") + 1].split(":")[0]
        ends, ready = time.monotonic() + READY_WITHIN, False
        while time.monotonic() < ends and not ready:
            try:
                ready = requests.get(f"http://127.0.0.1:{published}/readyz", timeout=2).status_code == 200
            except requests.RequestException:
                time.sleep(0.5)
        assert ready, f"the {image} container never answered /readyz"
    finally:
        after = set(subprocess.run(["docker", "ps", "-q"], capture_output=True, text=True).stdout.split())
        for container in after - before:
            subprocess.run(["docker", "rm", "-f", container], capture_output=True)
        process.wait(timeout=30)
