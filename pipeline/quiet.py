"""TensorFlow's start-up noise, silenced at its sources so genuine warnings still show.

Where each line comes from, on a machine without a GPU:

- ``WARNING: All log messages before absl::InitializeLog() is called are written to STDERR``, then
  ``I0000 ... cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.`` (twice:
  two shared libraries each carry a copy) and ``E0000 ... cuda_platform.cc:52] failed call to cuInit: ...
  UNKNOWN ERROR (303)``: C++ Abseil logging, written straight to file descriptor 2 while ``import tensorflow``
  runs and when the devices are first listed. No environment variable reaches it (Abseil logs everything to
  stderr until ``absl::InitializeLog()``, which Python cannot call), so the first ``import tensorflow`` runs
  with descriptor 2 captured; the devices are listed inside that window, and every captured line that is not
  one of the known notices below is written back.
- The oneDNN notice and ``cpu_feature_guard`` (``This TensorFlow binary is optimized ...``): TensorFlow's own
  C++ logging at INFO level; ``TF_CPP_MIN_LOG_LEVEL=2`` (set only when the user has not set it) drops them.
- ``WARNING:absl:Please consider providing the trackable_obj argument ...`` and ``UserWarning: Statistics for
  quantized inputs were expected ...``: Python ``logging`` and ``warnings`` from the TFLite converter, about
  how cnnpipe calls it, nothing a user can act on; exactly those two messages are filtered.

``install()`` is called by the ``cnnpipe`` entry point before anything imports TensorFlow; the library itself
never changes a process's logging. ``filtered_stderr()`` drops the same lines around any other block, e.g. a
TFLite conversion, whose quantizer prints ``fully_quantize: 0, inference_type: 6, ...`` to descriptor 2.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import logging
import os
import re
import sys
import tempfile
import warnings

NOISE = tuple(re.compile(p) for p in (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
    r"^[IWE]\d{4} [\d:.]+ +\d+ cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine",
    r"^[IWE]\d{4} [\d:.]+ +\d+ \w+\.cc:\d+\] failed call to cuInit: ",
    r"^[IWE]\d{4} [\d:.]+ +\d+ cuda_diagnostics\.cc:\d+\] ",  # what the missing driver would have been
    r"^[IWE]\d{4} [\d:.]+ +\d+ port\.cc:\d+\] oneDNN custom operations are on",
    r"^[IWE]\d{4} [\d:.]+ +\d+ cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized",
    r"^To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\.$",
    r"^[IWE]\d{4} [\d:.]+ +\d+ \w+\.cc:\d+\] Unable to register cu(DNN|FFT|BLAS) factory",
    r"^[IWE]\d{4} [\d:.]+ +\d+ \w+\.cc:\d+\] Attempting to register factory for plugin cu(DNN|FFT|BLAS)",
    r"^fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, output_inference_type: \w+$",
))
CONVERTER_LOG = "Please consider providing the trackable_obj argument"
CONVERTER_WARNING = "Statistics for quantized inputs were expected, but not specified"


def is_noise(line: str) -> bool:
    """True for a start-up notice line that says nothing a user can act on."""
    line = line.rstrip("\r\n")
    return any(p.search(line) for p in NOISE)


def install() -> None:
    """Silence the known notices for this process; the first ``import tensorflow`` runs filtered."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", message=re.escape(CONVERTER_WARNING), category=UserWarning)
    absl = logging.getLogger("absl")
    if not any(isinstance(f, _ConverterFilter) for f in absl.filters):
        absl.addFilter(_ConverterFilter())
    if "tensorflow" not in sys.modules and not any(isinstance(f, _FirstImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _FirstImport())


class _ConverterFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return CONVERTER_LOG not in record.getMessage()


@contextlib.contextmanager
def filtered_stderr():
    """Capture file descriptor 2 (where C++ code logs) for the block; write back every line but the noise."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no stderr at all: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", errors="replace")
            kept = "".join(line for line in text.splitlines(keepends=True) if not is_noise(line))
            if kept:
                os.write(2, kept.encode("utf-8"))


class _FirstImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once, with a loader that runs the import and lists the devices filtered."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _FilteredLoader(spec.loader)
                return spec
        return None


class _FilteredLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with filtered_stderr():
            self._loader.exec_module(module)
            try:  # the cuInit attempt happens here, inside the window; never a reason for the import to fail
                module.config.list_physical_devices()
            except Exception:  # noqa: BLE001 - TensorFlow reports device problems again when they matter
                pass

    def __getattr__(self, name):  # is_package, get_code, get_resource_reader, ...
        return getattr(self._loader, name)
