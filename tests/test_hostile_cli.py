"""What a person sees from the real `cnnpipe` process: no TensorFlow start-up notices on stderr (genuine
warnings still show), and a closed stdout (`cnnpipe config | head`) ends quietly with exit 0."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from conftest import DEFAULT_CONFIG, REPO

MAIN = "import sys; from tasks.cli import main; sys.argv = ['cnnpipe'] + sys.argv[1:]; main()"
NOISE_MARKERS = ("absl::InitializeLog", "cudart_stub", "cuInit", "oneDNN", "cpu_feature_guard",
                 "Could not find cuda drivers", "XNNPACK delegate")


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *extra.pop("path", [])])
    return {**env, **extra}


def test_stage_command_stderr_has_no_tensorflow_startup_noise(tmp_path):
    """A real stage (ingest imports TensorFlow) in a fresh process, environment as a user has it."""
    args = ["ingest", "--config", str(DEFAULT_CONFIG), "--run", "q"]
    out = subprocess.run([sys.executable, "-c", MAIN, *args],
                         cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "runs" / "q" / "data" / "manifest.json").is_file() and "[ingest]" in out.stdout
    assert out.stderr == "", out.stderr
    out = subprocess.run([sys.executable, "-c", MAIN, "predict", str(tmp_path / "runs"), "x.png"],
                         cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr  # a usage error still shows


FAKE_TF = '''
import os, sys, warnings
os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
os.write(2, b"I0000 00:00:1795423649.398151   10060 cudart_stub.cc:31] Could not find cuda drivers on your "
            b"machine, GPU will not be used.\\n")
os.write(2, b"W0000 00:00:1795423649.5   10060 some_kernel.cc:12] a genuine C++ warning\\n")
warnings.warn("a genuine Python warning", UserWarning)
os.write(2, b"I0000 00:00:1795423649.6   10060 port.cc:153] oneDNN custom operations are on. "
            b"You may see ...\\n")

class config:
    tried = False

    @classmethod
    def list_physical_devices(cls):  # like CUDA's, the first listing tries cuInit once
        if cls.tried:
            return []
        cls.tried = True
        os.write(2, b"E0000 00:00:1795423653.709629   12133 cuda_platform.cc:52] failed call to cuInit: "
                    b"INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\\n")
        return []
'''


@pytest.mark.parametrize("quiet", [True, False])
def test_only_the_known_notices_are_dropped(tmp_path, quiet):
    """A stand-in `tensorflow` writes the real notices and genuine warnings to file descriptor 2, as the C++
    libraries do: quiet drops exactly the notices, keeps the rest in order, and changes nothing when off."""
    (tmp_path / "fake" / "tensorflow").mkdir(parents=True)
    (tmp_path / "fake" / "tensorflow" / "__init__.py").write_text(FAKE_TF)
    code = textwrap.dedent(f"""
        from pipeline import quiet
        if {quiet}:
            quiet.install()
        import tensorflow
        import tensorflow  # a second import is plain
        print("imported", tensorflow.config.list_physical_devices())
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env=_env(path=[str(tmp_path / "fake")]), timeout=60)
    assert out.returncode == 0 and out.stdout == "imported []\n", out.stderr
    lines = out.stderr.splitlines()
    genuine = [line for line in lines if "a genuine" in line and not line.startswith(" ")]
    assert len(genuine) == 2 and "some_kernel.cc:12] a genuine C++ warning" in genuine[0]
    assert "UserWarning: a genuine Python warning" in genuine[1]
    noise = [line for line in lines if any(m in line for m in NOISE_MARKERS)]
    if quiet:
        assert noise == [] and len(lines) == 3  # the warning's source line follows it
    else:
        assert len(noise) == 4  # absl, cudart, oneDNN, cuInit


def test_is_noise_matches_the_notices_and_nothing_else():
    from pipeline import quiet

    noise = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1795423649.398151   10060 cudart_stub.cc:31] Could not find cuda drivers on your "
        "machine, GPU will not be used.",
        "E0000 00:00:1795423666.349609   10206 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA "
        "error: Failed call to cuInit: UNKNOWN ERROR (303)",
        "I0000 00:00:1795423710.651021   11460 cpu_feature_guard.cc:227] This TensorFlow binary is optimized "
        "to use available CPU instructions in performance-critical operations.",
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the "
        "appropriate compiler flags.",
        "I0000 00:00:1795423710.1 11460 port.cc:153] oneDNN custom operations are on. You may see slightly "
        "different numerical results",
        "fully_quantize: 0, inference_type: 6, input_inference_type: INT8, output_inference_type: INT8",
    ]
    genuine = [
        "W0000 00:00:1795423649.5   10060 some_kernel.cc:12] failed to allocate 4.0GiB from device",
        "E0000 00:00:1795423649.5   10060 cuda_driver.cc:12] out of memory",
        "UserWarning: Statistics for quantized inputs were expected",  # a warning line is not a C++ notice
        "error: data.source: unknown source 'x'",
        "Traceback (most recent call last):",
    ]
    assert [quiet.is_noise(line) for line in noise] == [True] * len(noise)
    assert [quiet.is_noise(line) for line in genuine] == [False] * len(genuine)


@pytest.mark.parametrize("args", [["config", "--config", str(DEFAULT_CONFIG)], ["--help"],
                                  ["ingest", "--help"], ["config", "--set", "train.epochs=3"]])
def test_closed_stdout_ends_quietly_with_exit_0(tmp_path, args):
    """`cnnpipe config | head`: the reader is gone before cnnpipe writes (closed at once, like `| true`)."""
    proc = subprocess.Popen([sys.executable, "-c", MAIN, *args], cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and stderr == "", stderr
    assert not (tmp_path / "runs").exists()


def test_closed_stdout_keeps_a_config_error(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", MAIN, "config", "--set", "data.seed=4294967296"],
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 2
    assert stderr == "error: data.seed: 4294967296 is above the maximum 4294967295 (seeds are 32-bit)\n"


def test_filtered_stderr_drops_the_quantizer_line_around_a_block(capfd):
    from pipeline import quiet

    with quiet.filtered_stderr():
        os.write(2, b"fully_quantize: 0, inference_type: 6, input_inference_type: INT8, "
                    b"output_inference_type: INT8\nW0000 00:00:1.5 7 x.cc:1] kept\n")
    assert capfd.readouterr().err == "W0000 00:00:1.5 7 x.cc:1] kept\n"


def test_an_allocation_too_large_for_memory_is_one_line(workdir):
    from conftest import DEFAULT_CONFIG, invoke

    result = invoke(["ingest", "--config", DEFAULT_CONFIG, "--run", "big",
                     "--set", "data.image_size=[6000, 6000]"])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert (len(errors) == 1
            and errors[0].startswith("error: not enough memory: Unable to allocate")), result.output
    assert "use a smaller data.image_size" in errors[0] and "Traceback" not in result.output
    assert not (workdir / "runs/big/data/manifest.json").exists()
