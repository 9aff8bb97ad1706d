"""The sparse Linear kernels in C (csrc/sparse_linear.c), built for this machine on first use.

    kernels = native_kernels()   # None where they cannot be built; native_status() says why

The library is compiled once per machine with the C compiler found (`$CC`, else `cc`, `gcc`,
`clang`) for the CPU it runs on (`-march=native`), and kept in the cache (`$TICKETLAB_CACHE`,
else ~/.cache/ticketlab) under a name hashed from the source, the flags, the compiler's version
and the CPU, so that a changed source, compiler or machine builds a new one. It is written under
a temporary name and renamed, so processes building it at once never load a half-written file.

Without a compiler, models.sparse_linear runs PyTorch's own sparse operations instead: the same
function, slower (BENCHMARKS.md, "Sparse kernels"); the first layer built says so once, as a
warning. `TICKETLAB_NATIVE_KERNELS=0` turns the library off (to compare both, or to rule it out).
"""

from __future__ import annotations

import array
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from ticketlab.config import cache_root

SOURCE = Path(__file__).with_name("csrc") / "sparse_linear.c"
# -fno-math-errno: sqrtf without errno, so that Adam's step vectorises.
FLAGS = ("-O3", "-ffp-contract=fast", "-fno-math-errno", "-fPIC", "-shared")
LIBRARIES = ("-lm",)
MACHINE_FLAGS = ("-march=native",)  # dropped, and the build retried, where the compiler refuses it
COMPILERS = ("cc", "gcc", "clang")
DISABLE = "TICKETLAB_NATIVE_KERNELS"

_P, _I, _D = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
SIGNATURES = {
    "transpose_pad": [_I, _I, _P, _I, _I, _P, _I],
    "csr_forward": [_I, _I, _P, _P, _P, _P, _P, _P],
    "csr_weight_grad": [_I, _I, _P, _P, _P, _P, _P],
    "csr_input_grad": [_I, _I, _I, _P, _P, _P, _P, _P],
    "row_sums": [_I, _I, _P, _P],
    "relu_pad": [_I, _I, _I, _P],
    "relu_grad": [_I, _P, _P],
    "adam_step": [_I, _P, _P, _P, _P, _P, _D, _D, _D, _D, _D],
    "chain_forward": [_I, _P, _I, _I, _P, _I, _I, _P, _P],
    "chain_backward": [_I, _P, _I, _I, _P, _P, _I, _I, _P, _I, _P],
}
LAYER_WORDS = 8  # a layer of a chain for the C kernels: csrc's layer_t, eight 64-bit words


class NativeKernels:
    """The library's functions on tensors: float32 on the CPU; matrices features × ld, ld a
    multiple of 8, rows contiguous (`padded` makes them)."""

    def __init__(self, library: ctypes.CDLL):
        for name, argtypes in SIGNATURES.items():
            function = getattr(library, name)
            function.argtypes, function.restype = argtypes, None
        self.library = library

    @staticmethod
    def width(batch: int) -> int:
        return -(-batch // 8) * 8

    def padded(self, a: torch.Tensor) -> torch.Tensor:
        """a (batch × features, any strides) transposed into a new (features × ld) matrix, zeros past the batch."""
        batch, features = a.shape
        out = torch.empty(features, self.width(batch))
        self.library.transpose_pad(batch, features, a.data_ptr(), a.stride(0), a.stride(1), out.data_ptr(),
                                   out.shape[1])
        return out

    def forward(self, crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, bias: torch.Tensor | None,
                x: torch.Tensor) -> torch.Tensor:
        y = torch.empty(len(crow) - 1, x.shape[1])
        self.library.csr_forward(y.shape[0], x.shape[1], crow.data_ptr(), col.data_ptr(), values.data_ptr(),
                                 None if bias is None else bias.data_ptr(), x.data_ptr(), y.data_ptr())
        return y

    def weight_grad(self, crow: torch.Tensor, col: torch.Tensor, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        grad = torch.empty(len(col))
        self.library.csr_weight_grad(g.shape[0], g.shape[1], crow.data_ptr(), col.data_ptr(), g.data_ptr(),
                                     x.data_ptr(), grad.data_ptr())
        return grad

    def input_grad(self, crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, g: torch.Tensor,
                   in_features: int) -> torch.Tensor:
        grad = torch.empty(in_features, g.shape[1])
        self.library.csr_input_grad(g.shape[0], in_features, g.shape[1], crow.data_ptr(), col.data_ptr(),
                                    values.data_ptr(), g.data_ptr(), grad.data_ptr())
        return grad

    def relu_pad(self, y: torch.Tensor, batch: int) -> None:
        """y = relu(y) in place over the batch's columns, zeros past them."""
        self.library.relu_pad(y.shape[0], batch, y.shape[1], y.data_ptr())

    def relu_grad(self, y: torch.Tensor, g: torch.Tensor) -> None:
        """g zeroed in place where the activation y is not positive."""
        self.library.relu_grad(g.numel(), y.data_ptr(), g.data_ptr())

    def row_sums(self, g: torch.Tensor) -> torch.Tensor:
        out = torch.empty(g.shape[0])
        self.library.row_sums(g.shape[0], g.shape[1], g.data_ptr(), out.data_ptr())
        return out

    def chain_forward(self, layers: array.array, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The output of the chain `layers` (LAYER_WORDS each, packed by models.sparse_chain) for
        x (batch × cols of the first, any strides), and the work buffer that keeps every layer's
        input for chain_backward."""
        batch, ld = x.shape[0], self.width(x.shape[0])
        work = torch.empty(ld * (layers[1] + sum(layers[::LAYER_WORDS])))  # the first's cols, every layer's rows
        out = torch.empty(batch, layers[-LAYER_WORDS])
        self.library.chain_forward(len(layers) // LAYER_WORDS, layers.buffer_info()[0], batch, ld, x.data_ptr(),
                                   x.stride(0), x.stride(1), work.data_ptr(), out.data_ptr())
        return out, work

    def chain_backward(self, layers: array.array, work: torch.Tensor, grad: torch.Tensor,
                       grad_x: torch.Tensor | None) -> None:
        """The gradients of the chain from its output's `grad`, written where `layers` points,
        and the input's into grad_x (batch × cols of the first) unless None."""
        batch, ld = grad.shape[0], self.width(grad.shape[0])
        widest = max(max(layers[::LAYER_WORDS]), max(layers[1::LAYER_WORDS]))
        scratch = torch.empty(2 * widest * ld)
        self.library.chain_backward(len(layers) // LAYER_WORDS, layers.buffer_info()[0], batch, ld, work.data_ptr(),
                                    grad.data_ptr(), grad.stride(0), grad.stride(1), scratch.data_ptr(), widest,
                                    None if grad_x is None else grad_x.data_ptr())

    def adam_step(self, param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                  step: torch.Tensor, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float) -> None:
        """One step of Adam in place on param, its moments and its step count (contiguous, same numel)."""
        self.library.adam_step(param.numel(), param.data_ptr(), grad.data_ptr(), exp_avg.data_ptr(),
                               exp_avg_sq.data_ptr(), step.data_ptr(), lr, beta1, beta2, eps, weight_decay)


def native_kernels() -> NativeKernels | None:
    """The built library, or None where it is turned off or cannot be built (native_status says why)."""
    kernels, _ = _load()
    return kernels


def native_status() -> str:
    """One line: the library in use, or why PyTorch's sparse operations run instead."""
    kernels, why = _load()
    return f"native ({why})" if kernels is not None else f"PyTorch's sparse operations: {why}"


def unexpectedly_missing() -> bool:
    """Whether the library is missing for another reason than being turned off."""
    kernels, why = _load()
    return kernels is None and why != f"${DISABLE}=0"


@functools.cache
def _load() -> tuple[NativeKernels | None, str]:
    if os.environ.get(DISABLE, "1") == "0":
        return None, f"${DISABLE}=0"
    compiler = _compiler()
    if compiler is None:
        return None, "no C compiler found ($CC, cc, gcc, clang)"
    try:
        return NativeKernels(ctypes.CDLL(str(_built(compiler)))), compiler
    except (OSError, subprocess.SubprocessError) as error:
        return None, f"the C kernels did not build with {compiler}: {str(error).splitlines()[0]}"


def _compiler() -> str | None:
    for name in filter(None, (os.environ.get("CC"), *COMPILERS)):
        path = shutil.which(name)
        if path is not None:
            return path
    return None


def _built(compiler: str) -> Path:
    """The library for this source, compiler and CPU: from the cache, else compiled into it."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    key = hashlib.sha256("\n".join([SOURCE.read_text(), " ".join(FLAGS + MACHINE_FLAGS + LIBRARIES), compiler,
                                    version, platform.machine(), _cpu()]).encode()).hexdigest()[:16]
    target = cache_root() / "kernels" / f"sparse_linear-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        for machine in (MACHINE_FLAGS, ()):
            result = subprocess.run([compiler, *FLAGS, *machine, str(SOURCE), *LIBRARIES, "-o", str(built)],
                                    capture_output=True, text=True, timeout=300)
            if result.returncode == 0:
                break
        else:
            raise OSError((result.stderr.strip() or f"exit status {result.returncode}").splitlines()[0])
        os.replace(built, target)
    return target


def _cpu() -> str:
    """What names this machine's CPU, so that a cache shared between machines builds for each."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    first = {}
    for line in info.splitlines():
        key = line.split(":")[0].strip()
        if key in ("model name", "flags", "Features"):  # Features: ARM's flags
            first.setdefault(key, line)
    return "\n".join(first.values())
