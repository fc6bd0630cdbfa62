"""The code sandbox contains hostile programs and runs benign ones (real bubblewrap, no mocks)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from synthaug.verify import sandbox as sandbox_module
from synthaug.verify.sandbox import Limits, Result, Sandbox, SandboxUnavailable

FAST = Limits(timeout=2.0, memory_mb=256, output_limit=10_000)


def run(code: str, *args: str, limits: Limits = FAST, **kw: object) -> Result:
    return asyncio.run(Sandbox(limits).run(code, args, **kw))  # type: ignore[arg-type]


def survivors(marker: str) -> list[int]:
    """Host processes whose command line holds `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
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
    marker = f"bomb-{uuid.uuid4().hex}"
    code = "import os, sys\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n" \
           "        pass\n"
    result = run(code, marker)
    assert result.status == "timeout"
    assert survivors(marker) == []


def test_process_count_is_capped() -> None:
    code = ("import os, time\nn = 0\ntry:\n    while n < 500:\n        if os.fork() == 0:\n"
            "            time.sleep(20)\n            os._exit(0)\n        n += 1\n"
            "except OSError:\n    pass\nprint(n)")
    result = run(code, limits=FAST.model_copy(update={"processes": 32}))
    assert result.status == "ok" and int(result.stdout) < 32


def test_detached_daemon_does_not_outlive_the_run() -> None:
    marker = f"daemon-{uuid.uuid4().hex}"
    code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        time.sleep(60)\n    os._exit(0)\nprint('parent done')")
    result = run(code, marker)
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
