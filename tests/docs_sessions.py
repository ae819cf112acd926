"""Run the shell sessions of a Markdown page as a reader would type them.

A *session* is a fenced ```` ```console ```` block: lines starting with ``$ `` are commands
(a trailing ``\\`` continues one), the lines after a command are its expected output.
Every session of a page runs, in page order, in **one** bash process, so ``export``,
``cd`` and background jobs (``cmd &``) carry over as they would in a reader's terminal.

Why a harness of our own: the pages mix commands with background servers, placeholders a
reader copies from earlier output (``JOB_ID``, a CID shortened to ``QmbHjxTW...``) and
engines provisioned by the suite (Docker, NATS). prysk/cram runs ``.t`` files, not
Markdown fences, and has no placeholders; sybil and pytest-markdown-docs find fences but
run Python only (a sybil parser would still need all of the shell handling below);
pytest-console-scripts calls one entry point in-process. What remains, one bash fed
command by command, is about 200 lines.

How a page runs:

* in a copy of the repository (the files git knows, committed or not) where the README's
  first command is already done: ``.venv`` exists (a venv layered over the test suite's,
  so ``pip install`` in a session changes only the copy) and its ``bin/`` holds
  ``bacalhau``; that first command, where a page repeats it, is not run again;
* in a network namespace of its own (``unshare --net``, root or user namespaces), so the
  default ports a page uses (1234...) cannot clash with anything else on the machine;
* with ``HOME`` in a temporary folder and ``PATH`` the system's: what a page does not
  say to set up is not there.

Checks: every command exits 0 (or N, where the page shows ``[exit N]`` as its last
output line), and every expected output line appears in the output (``...`` or ``…``
match anything; a line of ``...`` alone is skipped). A background
command (ending in ``&``) is waited for until it says it is ready (``Ready.`` or
``export BACALHAU_API=``). Placeholders: ``JOB_ID`` is the last job id printed, and a
word ending in ``...`` (``QmbHjxTW...``, ``j-37a1a91e``) is the full word printed
earlier that starts with it.

A session preceded by ``<!-- docs-test: skip REASON -->`` is not run (the reason is
required, e.g. commands shown for three machines). A fence of any language preceded by
``<!-- docs-test: save NAME -->`` is a file the page tells the reader to save (a Python
client run next with ``python NAME``, a job file): it is written when the page reaches it.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(
    r"^(?:<!-- docs-test: (?:skip (?P<skip>.+?)|save (?P<save>[\w./-]+)) -->\n)?"
    r"```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```",
    re.M | re.S,
)
SETUP = "python3 -m venv .venv && .venv/bin/pip install -e ."
INSTALLED = re.compile(r"^pip install -e '?\.(\[[a-z,]+\])?'?(?=\s*(#|$))")
"""What the copy's ``.venv`` already holds (the test suite's packages: the package and
every extra), so the command is not run again: the README's first command, and
``pip install -e '.[test]'`` (``tests/test_docs_sessions.py`` checks that the extras a
page names exist and hold what their pages use)."""
EXIT = re.compile(r"^\[exit (\d+)\]$")
READY = re.compile(r"^Ready\.|export BACALHAU_API=", re.M)
JOB = re.compile(r"\bj-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
WORD = re.compile(r"[A-Za-z0-9_.:/=+-]+")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KEPT_ENV = ("DOCKER_", "BACALHAU_NATS_SERVER", "BACALHAU_TEST_IMAGE", "LANG", "LC_", "PIP_")
"""What a page's shell inherits: the engines the suite provisioned, the locale, and how
pip reaches its packages on this machine. Nothing else (no venv, no BACALHAU_API)."""
OFFLINE_PIP = {"PIP_RETRIES": "0", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
"""The page's namespace has no network: pip takes its packages from this machine's local
indexes (its config), and retrying an index it cannot reach (with back-off, 30 s and
more per ``pip install``) or checking for a newer pip would only cost time."""


@attrs.frozen
class Command:
    text: str
    expected: tuple[str, ...]
    line: int  # line number in the page

    @property
    def background(self) -> bool:
        return re.sub(r"\s+#.*$", "", self.text).rstrip().endswith("&")


@attrs.frozen
class Session:
    commands: tuple[Command, ...]
    line: int
    skip: str | None = None
    save: tuple[str, str] | None = None
    """A file the reader saves (``<!-- docs-test: save NAME -->`` before any fence): its
    name and content, written (in the shell's folder) when the page reaches it."""


def sessions(page: str) -> list[Session]:
    """The console sessions of a page's Markdown, in order."""
    found = []
    for match in FENCE.finditer(page):
        first = page.count("\n", 0, match.start("body")) + 1
        if match.group("save"):
            found.append(Session((), first, save=(match.group("save"), match.group("body"))))
            continue
        if match.group("lang") != "console":
            continue
        lines = match.group("body").splitlines()
        commands: list[Command] = []
        i = 0
        while i < len(lines):
            if not lines[i].startswith("$ "):
                i += 1  # output before any command, or a prompt of another machine
                continue
            start, text = i, lines[i][2:]
            while text.endswith("\\") and i + 1 < len(lines):
                i += 1
                text += "\n" + lines[i]
            i += 1
            expected = []
            while i < len(lines) and not lines[i].startswith("$ "):
                expected.append(lines[i])
                i += 1
            commands.append(Command(text, tuple(expected), first + start))
        found.append(Session(tuple(commands), first, match.group("skip")))
    return found


def expected_status(command: Command) -> int:
    """The exit status the page shows for ``command``: ``[exit N]`` as its last output
    line, else 0."""
    shown = [line.strip() for line in command.expected if line.strip()]
    found = EXIT.match(shown[-1]) if shown else None
    return int(found.group(1)) if found else 0


def expected_pattern(line: str) -> re.Pattern[str] | None:
    """A regex for one expected output line (None: nothing to check)."""
    stripped = line.strip()
    if not stripped or stripped in ("...", "…") or EXIT.match(stripped):
        return None
    parts = re.split(r"\.\.\.|…", stripped)
    return re.compile(".*".join(re.escape(p) for p in parts))


class DocsSessionError(AssertionError):
    """A command of a page failed, or its output was not what the page shows."""


def _overlay_venv(copy: Path) -> None:
    """``copy/.venv``: a venv whose packages are the test suite's, plus its own."""
    venv = copy / ".venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    purelib = Path(sysconfig.get_paths()["purelib"])
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = venv / "lib" / version / "site-packages"
    (site / "_suite_packages.pth").write_text(f"import site; site.addsitedir({str(purelib)!r})\n")
    bin_ = venv / "bin"
    for name, body in {
        "bacalhau": "from bacalhau.cli import main\nraise SystemExit(main())\n",
        "pip": (
            "import runpy, sys\nsys.argv[0] = 'pip'\nrunpy.run_module('pip', run_name='__main__')\n"
        ),
        "pytest": "import pytest\nraise SystemExit(pytest.console_main())\n",  # the test extra's
    }.items():
        path = bin_ / name
        path.write_text(f"#!{bin_ / 'python'}\n{body}")
        path.chmod(0o755)


def prepare_copy(dest: Path, *, template: Path | None = None) -> Path:
    """A copy of the repository's files (tracked and new, not ignored), with ``.venv``.

    ``template``: a copy this function made before (of the repository as it is now), to
    copy instead, with the paths in its ``.venv`` moved to ``dest``: a page's fresh copy
    then costs a file copy rather than a walk of git's files and a new venv.
    """
    if template is not None:
        shutil.copytree(template, dest, symlinks=True)
        venv = dest / ".venv"
        for path in [venv / "pyvenv.cfg", *(venv / "bin").iterdir()]:
            if path.is_symlink() or not path.is_file():
                continue
            text = path.read_text()
            if str(template) in text:
                path.write_text(text.replace(str(template), str(dest)))
        return dest
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in listed:
        if not raw:
            continue
        rel = Path(os.fsdecode(raw))
        src = ROOT / rel
        if not src.is_file():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    _overlay_venv(dest)
    return dest


class Shell:
    """One bash in a network namespace of its own, fed command by command."""

    def __init__(self, cwd: Path, home: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k.startswith(KEPT_ENV)}
        env.update({"HOME": str(home), "PATH": SYSTEM_PATH, "TERM": "dumb", "PS1": ""})
        env.update(OFFLINE_PIP)
        netns = (
            ["unshare", "--net", "--fork"] if os.geteuid() == 0 else ["unshare", "-rn", "--fork"]
        )
        self.proc = subprocess.Popen(
            [*netns, "bash", "--noprofile", "--norc"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.output = bytearray()
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.token = secrets.token_hex(6)
        self.count = 0
        self.run("ip link set lo up 2>/dev/null || true", timeout=30)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while chunk := os.read(fd, 65536):
            with self.lock:
                self.output += chunk

    def text(self, since: int = 0) -> str:
        with self.lock:
            return self.output[since:].decode(errors="replace")

    def run(self, command: str, *, timeout: float = 300) -> tuple[int, str]:
        """Run ``command``; return its exit status and everything printed meanwhile."""
        assert self.proc.stdin is not None
        self.count += 1
        mark = f"@@docs-{self.token}-{self.count}@@"
        start = len(self.output)
        self.proc.stdin.write(f"{command}\nprintf '\\n{mark} %d\\n' $?\n".encode())
        self.proc.stdin.flush()
        done = re.compile(rf"\n{re.escape(mark)} (\d+)\n")
        deadline = time.monotonic() + timeout
        while not (found := done.search(self.text(start))):
            if self.proc.poll() is not None:
                raise DocsSessionError(f"the shell exited during {command!r}:\n{self.text(start)}")
            if time.monotonic() > deadline:
                raise DocsSessionError(
                    f"{command!r} did not finish in {timeout:g}s:\n{self.text(start)}"
                )
            time.sleep(0.05)  # polling a pipe another thread fills; bounded by the deadline
        out = self.text(start)
        return int(found.group(1)), out[: found.start()]

    def wait_ready(self, since: int, what: str, *, timeout: float = 90) -> None:
        """Wait until the background job just started says it is ready (or dies)."""
        deadline = time.monotonic() + timeout
        while not READY.search(self.text(since)):
            alive, _ = self.run("kill -0 $! 2>/dev/null", timeout=30)
            if alive != 0 and not READY.search(self.text(since)):
                raise DocsSessionError(f"{what!r} exited before it was ready:\n{self.text(since)}")
            if time.monotonic() > deadline:
                raise DocsSessionError(f"{what!r} never said it was ready:\n{self.text(since)}")
            time.sleep(0.05)  # as above

    def close(self) -> None:
        """Kill the shell and everything it started (one process group), close the pipes."""
        try:
            os.killpg(self.proc.pid, 9)
        except ProcessLookupError:
            pass
        self.proc.wait(30)
        self.reader.join(30)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


def substitute(command: str, seen: str) -> str:
    """Fill the placeholders of ``command`` from the output ``seen`` so far."""
    if "JOB_ID" in command:
        jobs = JOB.findall(seen)
        if not jobs:
            raise DocsSessionError(f"{command!r} needs a JOB_ID, but no job id was printed yet")
        command = command.replace("JOB_ID", jobs[-1])

    def expand(match: re.Match[str]) -> str:
        prefix = match.group(1)
        words = [w for w in WORD.findall(seen) if w.startswith(prefix) and len(w) > len(prefix)]
        if not words:
            raise DocsSessionError(f"{command!r}: nothing printed earlier starts with {prefix!r}")
        return str(words[-1])

    return re.sub(r"\b([A-Za-z0-9]{6,})(?:\.\.\.|…)", expand, command)


def run_page(
    page: Path, workdir: Path, *, command_timeout: float = 300, template: Path | None = None
) -> list[str]:
    """Run every session of ``page`` in a fresh copy of the repository; return a log.

    ``template``: a copy made by :func:`prepare_copy` to start from (it stays as it is).

    Raises:
        DocsSessionError: naming the page, line and command that failed and why.
    """
    copy = prepare_copy(workdir / "repo", template=template)
    home = workdir / "home"
    home.mkdir()
    for rel in (".config/pip/pip.conf", ".pip/pip.conf"):  # how pip reaches its packages here
        mine = Path.home() / rel
        if mine.is_file():
            (home / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(mine, home / rel)
    shell = Shell(copy, home)
    log: list[str] = []
    seen = ""
    try:
        for session in sessions(page.read_text()):
            if session.skip:
                log.append(f"{page.name}:{session.line}: skipped ({session.skip})")
                continue
            if session.save is not None:
                name, body = session.save
                status, out = shell.run(f"cat > {name} <<'__DOCS_EOF__'\n{body}__DOCS_EOF__")
                if status != 0:
                    raise DocsSessionError(f"{page.name}:{session.line}: saving {name}: {out}")
                log.append(f"{page.name}:{session.line}: saved {name}")
                continue
            for cmd in session.commands:
                where = f"{page.name}:{cmd.line}"
                if cmd.text.startswith(SETUP):
                    rest = cmd.text[len(SETUP) :].lstrip()
                    text = "true " + rest if rest.startswith("&&") else "true"
                elif INSTALLED.match(cmd.text):
                    text = "true"
                else:
                    text = cmd.text
                text = substitute(text, seen)
                start = len(shell.output)
                status, out = shell.run(text, timeout=command_timeout)
                if cmd.background:
                    shell.wait_ready(start, text)
                    out = shell.text(start)
                seen += out
                log.append(f"{where}: $ {text}\n{out}")
                if status != expected_status(cmd):
                    raise DocsSessionError(f"{where}: `{cmd.text}` exited {status}:\n{out}")
                for line in cmd.expected:
                    pattern = expected_pattern(line)
                    if pattern is not None and not any(
                        pattern.fullmatch(o.strip()) for o in out.splitlines()
                    ):
                        raise DocsSessionError(
                            f"{where}: `{cmd.text}` did not print {line.strip()!r}; "
                            f"it printed:\n{out}"
                        )
    finally:
        shell.close()
    return log
