"""The code sandbox contains hostile programs and runs benign ones (real bubblewrap, no mocks)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from synthaug.verify import sandbox as sandbox_module
from synthaug.verify.sandbox import Limits, Result, Sandbox, SandboxUnavailable

FAST = Limits(timeout=2.0, memory_mb=256, output_limit=10_000)


def run(code: str, *args: str, limits: Limits = FAST, **kw: object) -> Result:
    return asyncio.run(Sandbox(limits).run(code, args, **kw))  # type: ignore[arg-type]


def new_marker() -> str:
    """A process name (15 characters at most) only this test's processes carry."""
    return "sbx" + uuid.uuid4().hex[:12]


def marked(code: str, marker: str) -> str:
    """`code` that first names its process `marker` (forked children inherit the name)."""
    return f"open('/proc/self/comm', 'w').write({marker!r})\n{code}"


def survivors(marker: str) -> list[int]:
    """Host processes named `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == marker:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_benign_program_runs_with_args_stdin_and_files() -> None:
    code = ("import sys, helper\n"
            "print(helper.twice(int(sys.argv[1])), sys.stdin.read().strip(), open('d.txt').read())")
    result = run(code, "21", stdin="from stdin", files={"helper.py": "def twice(x): return 2*x",
                                                        "d.txt": "data"})
    assert result.status == "ok" and result.exit_code == 0
    assert result.stdout.split() == ["42", "from", "stdin", "data"]


def test_error_exit_is_reported_with_stderr() -> None:
    result = run("raise SystemExit('bad input')")
    assert (result.status, result.exit_code) == ("error", 1)
    assert "bad input" in result.stderr


def test_infinite_loop_times_out_quickly() -> None:
    result = run("while True: pass")
    assert result.status == "timeout" and result.seconds < FAST.timeout + 2


def test_fork_bomb_is_capped_and_the_whole_tree_dies() -> None:
    marker = new_marker()
    code = "import os, sys\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n" \
           "        pass\n"
    result = run(marked(code, marker))
    assert result.status == "timeout"
    assert survivors(marker) == []


def test_process_count_is_capped() -> None:
    code = ("import os, time\nn = 0\ntry:\n    while n < 500:\n        if os.fork() == 0:\n"
            "            time.sleep(20)\n            os._exit(0)\n        n += 1\n"
            "except OSError:\n    pass\nprint(n)")
    result = run(code, limits=FAST.model_copy(update={"processes": 32}))
    assert result.status == "ok" and int(result.stdout) < 32


def test_detached_daemon_does_not_outlive_the_run() -> None:
    marker = new_marker()
    code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        time.sleep(60)\n    os._exit(0)\nprint('parent done')")
    result = run(marked(code, marker))
    assert result.status == "ok"
    assert survivors(marker) == []


def test_memory_bomb_is_stopped() -> None:
    result = run("x = bytearray(4 * 1024**3)")
    assert result.status == "memory"
    many = run("x = [bytearray(2**20) for _ in range(2000)]")
    assert many.status == "memory"


def test_stdout_flood_is_cut_at_the_limit() -> None:
    result = run("import sys\nwhile True:\n    sys.stdout.write('x' * 4096)")
    assert result.status == "output_limit" and result.truncated
    assert len(result.stdout) == FAST.output_limit


def test_deep_recursion_ends() -> None:
    result = run("import sys\nsys.setrecursionlimit(10**8)\ndef f(n): return f(n + 1)\nf(0)")
    assert result.status in {"killed", "timeout", "memory", "error"}


def test_host_filesystem_is_invisible_and_read_only(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    outside = tmp_path / "written.txt"
    code = ("import shutil, sys, os\nout = []\n"
            "for act in (lambda: shutil.rmtree(sys.argv[1]),\n"
            "            lambda: open(sys.argv[2], 'w').write('x'),\n"
            "            lambda: open('/usr/pwned', 'w').write('x'),\n"
            "            lambda: open('/etc/pwned', 'w').write('x'),\n"
            "            lambda: open(os.path.expanduser('~root/.ssh/id_rsa')).read(),\n"
            "            lambda: open('/root/.ssh/id_rsa').read()):\n"
            "    try:\n        act(); out.append('done')\n"
            "    except OSError as e:\n        out.append(type(e).__name__)\n"
            "print(out)")
    result = run(code, str(victim), str(outside))
    assert result.status == "ok"
    assert "done" not in result.stdout
    assert (victim / "keep.txt").read_text() == "precious" and not outside.exists()
    assert not Path("/usr/pwned").exists()


def test_environment_secrets_do_not_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNTHAUG_TEST_SECRET", "hunter2-token")
    result = run("import os\nprint(dict(os.environ))\nprint(open('/proc/1/environ').read())")
    assert "hunter2-token" not in result.stdout + result.stderr


def test_no_network_and_no_dns() -> None:
    code = ("import socket\nfor target in (('1.1.1.1', 53), ('pypi.org', 443)):\n"
            "    try:\n        socket.create_connection(target, timeout=1)\n"
            "        print('connected')\n    except OSError as e:\n"
            "        print('blocked', type(e).__name__)")
    result = run(code)
    assert result.status == "ok" and "connected" not in result.stdout
    assert result.stdout.count("blocked") == 2


def test_subprocess_shell_is_contained(tmp_path: Path) -> None:
    target = tmp_path / "from-shell"
    code = ("import subprocess, sys\n"
            "done = subprocess.run(['sh', '-c', f'id -u; touch {sys.argv[1]}; cat /etc/shadow'],"
            " capture_output=True, text=True)\nprint(done.stdout)")
    result = run(code, str(target))
    assert result.status == "ok"
    assert result.stdout.split()[0] == "65534"
    assert not target.exists()


def test_ctypes_cannot_regain_privileges() -> None:
    code = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "print(libc.setuid(0), libc.unshare(0x10000000), os.getuid())\n"
            "try:\n    open('/usr/pwned', 'w')\n    print('wrote')\nexcept OSError:\n"
            "    print('refused')")
    result = run(code)
    assert result.status == "ok"
    setuid, unshare, uid, verdict = result.stdout.split()
    assert (setuid, unshare, uid, verdict) == ("-1", "-1", "65534", "refused")


def test_disk_writes_are_bounded() -> None:
    code = "f = open('big', 'wb')\nfor _ in range(500):\n    f.write(b'x' * 2**20)\n    f.flush()"
    result = run(code, limits=FAST.model_copy(update={"disk_mb": 8}))
    assert result.status in {"error", "output_limit"}
    assert "No space left" in result.stderr or "File too large" in result.stderr \
        or result.status == "output_limit"


def test_refuses_without_isolation_unless_unsafe_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox_module, "bwrap_path", lambda: None)
    with pytest.raises(SandboxUnavailable, match="--unsafe-local"):
        Sandbox(FAST)
    box = Sandbox(FAST, unsafe_local=True)
    assert box.isolation == "unsafe-local"
    result = asyncio.run(box.run("import os\nprint(os.getcwd() != '/', 'ok')"))
    assert result.status == "ok" and "ok" in result.stdout
    assert asyncio.run(box.run("while True: pass")).status == "timeout"


def test_cli_prints_one_json_object(tmp_path: Path) -> None:
    program = tmp_path / "prog.py"
    program.write_text("import sys\nprint('got', *sys.argv[1:])\n")
    done = subprocess.run([sys.executable, "-m", "synthaug.cli", "sandbox", "run", str(program),
                           "a", "--flag", "--timeout", "5"], capture_output=True, text=True,
                          check=False, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["status"] == "ok" and shown["stdout"] == "got a --flag\n"
    assert set(shown) >= {"status", "exit_code", "stdout", "stderr", "truncated", "seconds"}
    program.write_text("while True: pass\n")
    done = subprocess.run([sys.executable, "-m", "synthaug.cli", "sandbox", "run", str(program),
                           "--timeout", "1"], capture_output=True, text=True, check=False)
    assert done.returncode == 1 and json.loads(done.stdout)["status"] == "timeout"


def test_host_kernel_state_is_out_of_reach() -> None:
    """sysctls, the host user's keyrings and ptrace: all refused (the sandbox user may map to
    the host's root, so the kernel would otherwise treat these as the host's)."""
    code = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nout = []\n"
            "try:\n    open('/proc/sys/fs/lease-break-time', 'w').write('45')\n"
            "    out.append('sysctl written')\nexcept OSError:\n    out.append('sysctl refused')\n"
            "out.append(libc.syscall(250, 0, -4, 0))  # keyctl(GET_KEYRING_ID, user keyring)\n"
            "out.append(libc.syscall(248, b'user', b'x', b'secret', 6, -4))  # add_key\n"
            "out.append(libc.syscall(101, 16, 1, 0, 0))  # ptrace(ATTACH, init)\n"
            "print(*out)")
    result = run(code)
    assert result.status == "ok", result.stderr
    assert result.stdout.split() == ["sysctl", "refused", "-1", "-1", "-1"]


@pytest.mark.parametrize("code", [130, 137, 152, 255])
def test_exit_codes_above_128_are_errors_not_signals(code: int) -> None:
    result = run(f"raise SystemExit({code})")
    assert (result.status, result.exit_code) == ("error", code)


def test_cpu_limit_is_a_timeout_even_when_sigxcpu_is_ignored() -> None:
    code = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True: pass"
    result = run(code, limits=FAST.model_copy(update={"timeout": 10.0, "cpu_seconds": 1}))
    assert result.status == "timeout" and result.seconds < 5


def test_many_arguments_non_utf8_stdin_and_one_process() -> None:
    args = [f"{i:04d}" + "x" * 96 for i in range(3000)]  # ~300 KB: more than one argv string
    result = run("import sys\nprint(len(sys.argv) - 1, sys.stdin.buffer.read())",
                 *args, stdin=b"\xff\xfe")  # type: ignore[arg-type]
    assert result.status == "ok" and result.stdout.strip() == "3000 b'\\xff\\xfe'"
    alone = run("print('alone')", limits=FAST.model_copy(update={"processes": 1}))
    assert alone.status == "ok" and alone.stdout == "alone\n"


def test_a_terminated_cli_leaves_no_process_or_folder_behind(tmp_path: Path) -> None:
    marker = new_marker()
    program = tmp_path / "sleeper.py"
    program.write_text(marked("import time\ntime.sleep(60)\n", marker))
    cli = subprocess.Popen([sys.executable, "-m", "synthaug.cli", "sandbox", "run", str(program),
                            "--timeout", "30"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    deadline = 100
    while not survivors(marker) and deadline:  # the marker is seen while the program runs
        deadline -= 1
        subprocess.run(["sleep", "0.05"], check=True)
    assert survivors(marker), "the sandboxed program never started"
    cli.terminate()
    _, err = cli.communicate(timeout=20)
    assert cli.returncode == 130, err
    assert survivors(marker) == []
    assert not list(Path(tempfile.gettempdir()).glob(f"synthaug-sandbox-{cli.pid}-*"))


def test_an_interpreter_under_tmp_stays_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    """A virtualenv under /tmp (a CI checkout) must not be hidden by the sandbox's own /tmp."""
    monkeypatch.setattr(sandbox_module, "_python_dirs", lambda: ["/tmp/ci/.venv"])
    argv = sandbox_module.isolation_argv("bwrap", FAST, "/tmp/x")
    tmpfs = next(i for i, a in enumerate(argv) if a == "/tmp" and argv[i - 1] == "--tmpfs")
    venv = argv.index("/tmp/ci/.venv")
    assert tmpfs < venv
