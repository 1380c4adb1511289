"""Keeping XNNPACK off Intel AMX (`cnnpipe bench --no-amx`, pipeline/amx.py): the filter refuses exactly the
request for AMX, for every thread, and the models give the same outputs either way. The filter lasts for the
life of a process, so each case runs in a process of its own."""
import errno
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import amx

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not amx.supported(), reason="AMX exists only on Linux x86-64")


def _python(code: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_deny_refuses_the_amx_request_in_every_thread_and_nothing_else():
    code = """
import ctypes, threading
from pipeline import amx
seen, go = [], threading.Event()
earlier = threading.Thread(target=lambda: go.wait() and seen.append(amx.request()))
earlier.start()  # a thread already running when the filter is installed
amx.deny()
later = threading.Thread(target=lambda: seen.append(amx.request()))
later.start(); later.join()
go.set(); earlier.join()
libc = ctypes.CDLL(None, use_errno=True)
fs = ctypes.c_ulong()
other = libc.syscall(158, 0x1003, ctypes.byref(fs))  # arch_prctl(ARCH_GET_FS): still allowed
mode = open("/proc/self/status").read().split("Seccomp:")[1].split()[0]
print(amx.request(), *seen, other, fs.value != 0, mode)
"""
    out = _python(code)
    assert out.returncode == 0, out.stderr
    main, later, earlier, other, fs_read, mode = out.stdout.split()
    assert int(main) == int(later) == int(earlier) == errno.EPERM
    assert int(other) == 0 and fs_read == "True"
    assert mode == "2"  # seccomp filter mode


def test_same_outputs_without_amx(tiny_models, tmp_path):
    """XNNPACK's int8 and float32 kernels with and without AMX give the same outputs, to the last bit."""
    from pipeline.edge import EdgeModel

    x = tiny_models["x_test"][:64]
    np.save(tmp_path / "x.npy", x)
    for fmt in ("int8", "float32"):
        (tmp_path / f"{fmt}.tflite").write_bytes(tiny_models["files"][fmt])
    code = f"""
import numpy as np
from pipeline import amx
amx.deny()
from pipeline.edge import EdgeModel
folder = {str(tmp_path)!r}
x = np.load(folder + "/x.npy")
for fmt in ("int8", "float32"):
    np.save(f"{{folder}}/{{fmt}}_no_amx.npy", EdgeModel(f"{{folder}}/{{fmt}}.tflite").predict(x))
"""
    out = _python(code)
    assert out.returncode == 0, out.stderr
    for fmt in ("int8", "float32"):
        here = EdgeModel(tmp_path / f"{fmt}.tflite").predict(x)
        np.testing.assert_array_equal(np.load(tmp_path / f"{fmt}_no_amx.npy"), here)


def test_bench_cli_no_amx(tiny_models, tmp_path):
    """`cnnpipe bench --no-amx` as a user runs it: the figures say so, in the JSON and the header line."""
    model = tmp_path / "int8.tflite"
    model.write_bytes(tiny_models["files"]["int8"])
    code = ("from tasks.cli import cli\nfrom pipeline import amx\n"
            f"cli(['bench', {str(model)!r}, '--runs', '20', '--threads', '1', '--no-amx', "
            f"'--json-out', {str(tmp_path / 'b.json')!r}], prog_name='cnnpipe', standalone_mode=False)\n"
            "print('amx request:', amx.request())")
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert "default kernels, no AMX)" in out.stdout
    assert f"amx request: {errno.EPERM}" in out.stdout  # the command kept its process off AMX
    figures = json.loads((tmp_path / "b.json").read_text())
    assert figures["no_amx"] is True and figures["runs"] == 20 and figures["mean_ms"] > 0
    assert figures["input"]["dtype"] == "int8"


def test_bench_cli_no_amx_where_seccomp_is_refused(tiny_models, tmp_path):
    """A system without seccomp filters (here: the call made to fail) gets one error line, exit 1, and no
    figures are written."""
    model = tmp_path / "int8.tflite"
    model.write_bytes(tiny_models["files"]["int8"])
    code = ("import sys\nfrom click.testing import CliRunner\nfrom pipeline import amx\n"
            "from tasks.cli import cli\n"
            "amx._NR_SECCOMP = 1_000_000  # no such system call: ENOSYS\n"
            f"r = CliRunner().invoke(cli, ['bench', {str(model)!r}, '--runs', '5', '--no-amx', "
            f"'--json-out', {str(tmp_path / 'b.json')!r}])\n"
            "print(r.exit_code); print(r.output)")
    out = _python(code)
    assert out.returncode == 0, out.stderr
    code, *lines = out.stdout.splitlines()
    assert code == "1" and "Traceback" not in out.stdout
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1
    assert "refused seccomp(SECCOMP_SET_MODE_FILTER) (Function not implemented)" in errors[0]
    assert not (tmp_path / "b.json").exists()


def test_bundle_bench_no_amx(tiny_models, tmp_path):
    """The bundle's TensorFlow-free `predict.py bench --no-amx` carries the filter inlined and keeps its
    process off AMX."""
    from pipeline import bundle

    bundle.write_runtime(tmp_path)
    (tmp_path / "model_int8.tflite").write_bytes(tiny_models["files"]["int8"])
    code = ("import runpy\nscript = runpy.run_path('predict.py')\n"
            "code = script['main'](['bench', '--model', 'model_int8.tflite', '--runs', '5', '--no-amx'])\n"
            "print('exit', code, 'amx request:', script['request']())")
    out = _python(code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "(default kernels, no AMX)" in out.stdout
    assert f"exit 0 amx request: {errno.EPERM}" in out.stdout
