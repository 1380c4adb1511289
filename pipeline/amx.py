"""Keep a process off Intel AMX, so LiteRT's XNNPACK runs the kernels a CPU without AMX runs.

On an Intel Xeon with AMX, XNNPACK's int8 convolutions run on AMX tiles 64 output channels wide
(``xnn_qs8_qc8w_igemm_minmax_fp32_ukernel_16x64c4__avx512amx``). An edge model's layers have 8 to 64
filters, so most of each tile computes nothing, and ResNet-8's int8 file ran 2x slower than on XNNPACK's
AVX-512 VNNI kernels on the same CPU (benchmarks/README.md, "Why int8 won only 1.12x on the Intel host"). No
phone, Raspberry Pi or microcontroller has AMX, so those kernels say more about the devices the files go to.

Linux lets a process use AMX only after it asks (``arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)``),
and XNNPACK falls back to its other x86 kernels when the request fails. :func:`deny` installs a seccomp
filter that fails that one request with ``EPERM`` in every thread of the process, for the rest of its life:
call it before the first interpreter is created, in a process of its own (``cnnpipe bench --no-amx``).
Every other system call, and every other ``arch_prctl``, is untouched.
"""
from __future__ import annotations

import ctypes
import os
import platform
import sys

from pipeline.errors import PipelineError

ARCH_REQ_XCOMP_PERM = 0x1023  # arch/x86/include/uapi/asm/prctl.h
_NR_ARCH_PRCTL, _NR_SECCOMP = 158, 317  # x86-64 system call numbers
_AUDIT_ARCH_X86_64 = 0xC000003E
_PR_SET_NO_NEW_PRIVS = 38
_SECCOMP_SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_TSYNC = 1, 1
_RET_ALLOW, _RET_EPERM = 0x7FFF0000, 0x00050000 | 1  # SECCOMP_RET_ERRNO with errno EPERM
_LD_ABS, _JEQ, _RET = 0x20, 0x15, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K
# offsets in struct seccomp_data: nr, arch, args[0] (its low 32 bits on little-endian x86-64)
_NR, _ARCH, _ARG0 = 0, 4, 16


class _Filter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint)]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Filter))]


# allow everything but arch_prctl(ARCH_REQ_XCOMP_PERM, ...) of an x86-64 process; jumps count instructions
_PROGRAM = [
    (_LD_ABS, 0, 0, _ARCH), (_JEQ, 0, 5, _AUDIT_ARCH_X86_64),  # another ABI: allow
    (_LD_ABS, 0, 0, _NR), (_JEQ, 0, 3, _NR_ARCH_PRCTL),         # another system call: allow
    (_LD_ABS, 0, 0, _ARG0), (_JEQ, 0, 1, ARCH_REQ_XCOMP_PERM),  # another arch_prctl: allow
    (_RET, 0, 0, _RET_EPERM),
    (_RET, 0, 0, _RET_ALLOW),
]


def supported() -> bool:
    """Linux on x86-64: the only place AMX exists and this filter applies."""
    return sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")


def deny() -> None:
    """Fail every later request for AMX in this process (all its threads) with ``EPERM``; do nothing where AMX
    cannot exist (:func:`supported`). A kernel or sandbox that refuses the filter is a one-line error."""
    if not supported():
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        _refused("prctl(PR_SET_NO_NEW_PRIVS)")
    filters = (_Filter * len(_PROGRAM))(*(_Filter(*op) for op in _PROGRAM))
    program = _Program(len(_PROGRAM), filters)
    if libc.syscall(_NR_SECCOMP, _SECCOMP_SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_TSYNC,
                    ctypes.byref(program)) != 0:
        _refused("seccomp(SECCOMP_SET_MODE_FILTER)")


def _refused(call: str):
    raise PipelineError(f"--no-amx: this system refused {call} ({os.strerror(ctypes.get_errno())}), so AMX "
                        "cannot be kept from XNNPACK here; time without --no-amx")


def request() -> int:
    """Ask Linux for AMX tile data as XNNPACK does: 0 when granted, else the errno (``EPERM`` after
    :func:`deny`; ``EINVAL`` or ``EOPNOTSUPP`` on a kernel or CPU without AMX)."""
    libc = ctypes.CDLL(None, use_errno=True)
    xtile_data = 18
    return 0 if libc.syscall(_NR_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, xtile_data) == 0 else ctypes.get_errno()
