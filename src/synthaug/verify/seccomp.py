"""A seccomp filter (classic BPF, built here, no libseccomp) that bubblewrap installs in the
sandbox: the kernel interfaces untrusted code has no use for fail with EPERM.

Denied: the kernel keyrings (they are per host user, so shared with the host when the sandbox
user maps to it), ptrace and cross-process memory access, io_uring, personality, namespace
and mount calls, BPF, perf events, userfaultfd, module/kexec loading, swap, reboot, syslog,
open_by_handle_at, and the x32 ABI. Other architectures than x86_64 and aarch64 get no filter
(`program()` returns None) and `synthaug sandbox info` says so.
"""

from __future__ import annotations

import platform
import struct

_DENIED = ("keyctl", "add_key", "request_key", "ptrace", "process_vm_readv",
           "process_vm_writev", "io_uring_setup", "io_uring_enter", "io_uring_register",
           "personality", "unshare", "setns", "mount", "umount2", "pivot_root", "bpf",
           "perf_event_open", "userfaultfd", "init_module", "finit_module", "delete_module",
           "kexec_load", "swapon", "swapoff", "reboot", "syslog", "acct", "open_by_handle_at")
_NUMBERS = {
    "x86_64": (0xC000003E, {
        "keyctl": 250, "add_key": 248, "request_key": 249, "ptrace": 101,
        "process_vm_readv": 310, "process_vm_writev": 311, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "personality": 135, "unshare": 272,
        "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155, "bpf": 321,
        "perf_event_open": 298, "userfaultfd": 323, "init_module": 175, "finit_module": 313,
        "delete_module": 176, "kexec_load": 246, "swapon": 167, "swapoff": 168, "reboot": 169,
        "syslog": 103, "acct": 163, "open_by_handle_at": 304}),
    "aarch64": (0xC00000B7, {
        "keyctl": 219, "add_key": 217, "request_key": 218, "ptrace": 117,
        "process_vm_readv": 270, "process_vm_writev": 271, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "personality": 92, "unshare": 97,
        "setns": 268, "mount": 40, "umount2": 39, "pivot_root": 41, "bpf": 280,
        "perf_event_open": 241, "userfaultfd": 282, "init_module": 105, "finit_module": 273,
        "delete_module": 106, "kexec_load": 104, "swapon": 224, "swapoff": 225, "reboot": 142,
        "syslog": 116, "acct": 89, "open_by_handle_at": 265}),
}
_LD_ABS, _JEQ, _JGE, _RET = 0x20, 0x15, 0x35, 0x06
_ALLOW, _EPERM, _KILL = 0x7FFF0000, 0x00050001, 0x80000000
_X32 = 0x40000000


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def program(machine: str | None = None) -> bytes | None:
    """The filter for this machine's architecture, or None where there is no table."""
    found = _NUMBERS.get(machine or platform.machine())
    if found is None:
        return None
    arch, numbers = found
    denied = [numbers[name] for name in _DENIED]
    # layout: check arch; load nr; [x32 check]; one jeq per denied call; allow; deny
    checks = ([_op(_JGE, _X32, jt=len(denied) + 1)] if arch == 0xC000003E else [])
    body = checks + [_op(_JEQ, nr, jt=len(denied) - i) for i, nr in enumerate(denied)]
    return b"".join([
        _op(_LD_ABS, 4),                       # seccomp_data.arch
        _op(_JEQ, arch, jt=1),                 # our arch: go on; else kill
        _op(_RET, _KILL),
        _op(_LD_ABS, 0),                       # seccomp_data.nr
        *body,
        _op(_RET, _ALLOW),
        _op(_RET, _EPERM),
    ])
