"""What the ``kernels/*.cu`` files declare, read from the source: kernels, parameters, constants.

A kernel's contract lives in its ``.cu`` file and nowhere else.  This module reads it:

* :func:`kernel_source` hands out ``<family>.cu`` with its local headers inlined (what NVRTC,
  nvcc and the emulator compile);
* :func:`kernels` lists the ``__global__`` templates of a family with their template
  parameters and their parameter names and C types (:class:`KernelDecl`);
* :func:`signature` instantiates one for a name expression (``conv2d_forward<float, 64>``),
  and :meth:`Signature.bind` turns the keyword arguments of a launch into the positional
  argument list, rejecting a missing, unknown or wrongly typed argument and converting every
  scalar to its declared C type;
* :func:`constant` and :func:`macro` read ``#define`` constants and evaluate function-like
  ``#define`` size formulas, so the launchers never repeat a tile size or a shared-memory formula.

The launchers (:mod:`fastconv.cuda.conv2d`, ``.pool``, ``.ssim``) never pass arguments by
position; the runtimes (CuPy and the emulator) call :meth:`Signature.bind` before they touch
a device library.
"""
from __future__ import annotations

import ast
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

#: Environment variable that overrides where the ``.cu`` files are read from.
KERNELS_DIR_ENV = "FASTCONV_KERNELS_DIR"

#: C++ storage type of each supported tensor dtype, as written in name expressions.
CTYPES: Dict[torch.dtype, str] = {
    torch.float32: "float",
    torch.float64: "double",
    torch.float16: "fc_half",  # raw binary16 storage, see kernels/fc_common.cuh
    torch.bfloat16: "fc_bf16",
}

#: Scalar C types a kernel parameter may have: (NumPy type for the launch, kind code of the emulator).
SCALARS: Dict[str, Tuple[type, str]] = {
    "long long": (np.int64, "i8"), "int": (np.int32, "i4"), "unsigned int": (np.uint32, "u4"),
    "unsigned long long": (np.uint64, "u8"), "float": (np.float32, "f4"), "double": (np.float64, "f8"),
}

#: Tensor dtype a pointer's element type must have.
POINTEES: Dict[str, torch.dtype] = {
    **{c: d for d, c in CTYPES.items()}, "long long": torch.int64, "int": torch.int32, "unsigned int": torch.int32,
}

_INCLUDE_RE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[ \t]*$', re.MULTILINE)
_LB = r"__launch_bounds__\s*\((?P<{}>(?:[^()]|\((?:[^()]|\([^()]*\))*\))*)\)\s*"
_GLOBAL_RE = re.compile(r"__global__\s+(?:" + _LB.format("lb") + r")?void\s+(?:" + _LB.format("lb2") +
                        r")?(?P<name>\w+)\s*\(")
_TEMPLATE_RE = re.compile(r"template\s*<(?P<params>[^<>]*(?:<[^<>]*>[^<>]*)*)>\s*$")
_DEFINE_RE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+(\w+)(\([^)]*\))?[ \t]+(.*?)[ \t]*(?://.*)?$", re.MULTILINE)


class LaunchError(TypeError):
    """A launch whose keyword arguments do not match the kernel's parameters in its ``.cu`` file."""


# --------------------------------------------------------------------------- files


def kernels_dir() -> Path:
    """Directory holding the ``.cu`` files: ``$FASTCONV_KERNELS_DIR``, else the checkout's ``kernels/``.

    The repository layout puts ``kernels/`` next to the ``fastconv`` package, which covers a
    source checkout and an editable install; an installed wheel ships them as
    ``fastconv/kernels`` package data.
    """
    env = os.environ.get(KERNELS_DIR_ENV)
    if env:
        return Path(env)
    pkg = Path(__file__).resolve().parent.parent
    for cand in (pkg.parent / "kernels", pkg / "kernels"):
        if (cand / "conv2d.cu").is_file():
            return cand
    raise FileNotFoundError(f"fastconv: cannot find the CUDA kernel sources (looked in {pkg.parent / 'kernels'} "
                            f"and {pkg / 'kernels'}); set {KERNELS_DIR_ENV}")


def kernel_path(family: str) -> Path:
    """Path of ``<family>.cu``."""
    return kernels_dir() / f"{family}.cu"


def _expand(root: Path, path: Path, seen: Tuple[Path, ...]) -> str:
    text = path.read_text()

    def sub(m: "re.Match[str]") -> str:
        inc = root / m.group(1)
        if not inc.is_file():
            return m.group(0)  # a system header spelled with quotes: leave it
        if inc in seen:
            return ""
        return f'#line 1 "{m.group(1)}"\n{_expand(root, inc, seen + (inc,))}\n#line 1 "{path.name}"\n'

    return _INCLUDE_RE.sub(sub, text)


def source_text(path: Path) -> str:
    """A ``.cu`` file with its local ``#include "..."`` files inlined (one self-contained unit)."""
    return f'#line 1 "{path.name}"\n' + _expand(path.parent, path, (path,))


def kernel_source(family: str) -> str:
    """Source of ``<family>.cu`` with its local headers inlined.

    Inlining keeps the code handed to NVRTC self-contained, so a compile cache keyed on the
    code can never serve a module built from a stale header.
    """
    return source_text(kernel_path(family))


# --------------------------------------------------------------------------- declarations


def _split_top(text: str, sep: str = ",") -> List[str]:
    """Split at ``sep`` outside (), <> and []."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch in "(<[":
            depth += 1
        elif ch in ")>]":
            depth -= 1
        if ch == sep and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def _strip_comments(code: str) -> str:
    code = re.sub(r"/\*.*?\*/", lambda m: " " * len(m.group(0)), code, flags=re.S)
    return re.sub(r"//[^\n]*", "", code)


@dataclass(frozen=True)
class Param:
    """One kernel parameter: its name and C type as written (template parameters unresolved)."""

    name: str
    ctype: str


@dataclass(frozen=True)
class KernelDecl:
    """A ``__global__`` function of a ``.cu`` file: template parameters, parameters, launch bound."""

    name: str
    template: Tuple[Tuple[str, str], ...]  # (kind, name): kind 'typename' or an integral type
    params: Tuple[Param, ...]
    launch_bounds: Optional[str]

    def expression(self, *targs: Any) -> str:
        """The name expression for template arguments ``targs`` (dtypes become their C types)."""
        if len(targs) != len(self.template):
            raise LaunchError(f"{self.name} has template parameters {[n for _, n in self.template]}, "
                              f"got {len(targs)} arguments")
        if not targs:
            return self.name
        parts = []
        for (kind, tname), a in zip(self.template, targs):
            if isinstance(a, torch.dtype):
                try:
                    a = CTYPES[a]
                except KeyError:
                    raise TypeError(f"fastconv CUDA kernels support float32, float64, float16 and bfloat16, "
                                    f"got {a}") from None
            elif kind != "typename":
                a = int(a)
            parts.append(str(a))
        return f"{self.name}<{', '.join(parts)}>"


def parse_kernels(code: str) -> Dict[str, KernelDecl]:
    """Every ``__global__`` function of ``code`` (a kernel source), by name."""
    code = _strip_comments(code)
    found: Dict[str, KernelDecl] = {}
    for m in _GLOBAL_RE.finditer(code):
        head = code[:m.start()].rstrip()
        tm = _TEMPLATE_RE.search(head[-400:])
        template: Tuple[Tuple[str, str], ...] = ()
        if tm:
            tps = []
            for tp in _split_top(tm.group("params")):
                words = tp.replace("class ", "typename ").split()
                tps.append((" ".join(words[:-1]), words[-1]))
            template = tuple(tps)
        depth, i = 1, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(code[i], 0)
            i += 1
        params = []
        for p in _split_top(code[m.end():i - 1]):
            words = p.replace("__restrict__", " ").replace("*", " * ").split()
            params.append(Param(words[-1], " ".join(words[:-1]).replace(" *", "*")))
        decl = KernelDecl(m.group("name"), template, tuple(params), m.group("lb") or m.group("lb2"))
        if decl.name in found and found[decl.name] != decl:
            raise ValueError(f"kernel {decl.name} is declared twice with different signatures")
        found[decl.name] = decl
    return found


@functools.lru_cache(maxsize=None)
def _family_kernels(family: str, mtime: float) -> Dict[str, KernelDecl]:
    return parse_kernels(kernel_source(family))


def kernels(family: str) -> Dict[str, KernelDecl]:
    """The kernel table of ``<family>.cu``: every ``__global__`` function, by name."""
    return _family_kernels(family, _mtime(family))


def _mtime(family: str) -> float:
    root = kernels_dir()
    return max(p.stat().st_mtime for p in root.iterdir() if p.suffix in (".cu", ".cuh")) + hash(str(root))


# --------------------------------------------------------------------------- instantiation and binding


def _resolve(ctype: str, env: Mapping[str, str]) -> str:
    """C type ``ctype`` with template parameters substituted and ``Acc<X>::type`` resolved."""
    text = re.sub(r"[A-Za-z_]\w*", lambda m: env.get(m.group(0), m.group(0)), ctype)
    # Acc<T>::type of fc_common.cuh: double for double, float for every other storage type.
    text = re.sub(r"typename\s+Acc\s*<\s*(\w+)\s*>\s*::\s*type",
                  lambda m: "double" if m.group(1) == "double" else "float", text)
    return re.sub(r"\s+", " ", text.replace(" *", "*")).strip()


@dataclass(frozen=True)
class BoundParam:
    """A parameter of an instantiated kernel: name, resolved C type, pointer-ness and constness."""

    name: str
    ctype: str
    pointer: bool
    const: bool
    base: str  # element type of a pointer, or the scalar type

    @property
    def code(self) -> str:
        """The emulator's parameter code: ``p<size>`` for pointers, ``i8``/``f4``/... for scalars."""
        if self.pointer:
            return f"p{_sizeof(self.base)}"
        return SCALARS[self.base][1]


def _sizeof(base: str) -> int:
    if base in ("fc_half", "fc_bf16"):
        return 2
    if base == "void":
        return 0
    return np.dtype(SCALARS[base][0]).itemsize


class Signature:
    """The parameter list of one name expression, as the ``.cu`` source declares it."""

    def __init__(self, expression: str, params: Sequence[BoundParam], launch_bounds: Optional[int]) -> None:
        self.expression = expression
        self.params = tuple(params)
        self.names = tuple(p.name for p in self.params)
        self.launch_bounds = launch_bounds

    @property
    def codes(self) -> str:
        """Comma-separated emulator parameter codes (compared with the compiled signature)."""
        return ",".join(p.code for p in self.params)

    def bind(self, args: Mapping[str, Any]) -> List[Any]:
        """Positional argument list for keyword ``args``; scalars converted to their declared C type.

        Raises :class:`LaunchError` for a missing or unknown name, a tensor passed for a scalar
        (or the other way round), a tensor of the wrong dtype or a scalar out of its type's range.
        """
        missing = [n for n in self.names if n not in args]
        unknown = [n for n in args if n not in self.names]
        if missing or unknown:
            raise LaunchError(f"{self.expression}: launch arguments do not match the kernel's parameters "
                              f"(missing {missing}, unknown {unknown}); the kernel takes {list(self.names)}")
        out: List[Any] = []
        for p in self.params:
            v = args[p.name]
            if p.pointer:
                if not isinstance(v, torch.Tensor):
                    raise LaunchError(f"{self.expression}: parameter {p.name!r} ({p.ctype}) needs a tensor, "
                                      f"got {type(v).__name__}")
                want = POINTEES.get(p.base)
                if want is not None and v.dtype != want:
                    raise LaunchError(f"{self.expression}: parameter {p.name!r} ({p.ctype}) needs a {want} "
                                      f"tensor, got {v.dtype}")
                out.append(v)
            else:
                if isinstance(v, (torch.Tensor, np.ndarray)):
                    raise LaunchError(f"{self.expression}: parameter {p.name!r} is a scalar ({p.ctype})")
                npt = SCALARS[p.base][0]
                if np.dtype(npt).kind in "iu":
                    if isinstance(v, (float, np.floating)) and float(v) != int(v):
                        raise LaunchError(f"{self.expression}: parameter {p.name!r} ({p.ctype}) got "
                                          f"non-integral {v!r}")
                    info = np.iinfo(npt)
                    if not info.min <= int(v) <= info.max:
                        raise LaunchError(f"{self.expression}: parameter {p.name!r} = {int(v)} does not fit "
                                          f"{p.ctype}")
                    out.append(npt(int(v)))
                else:
                    out.append(npt(float(v)))
        return out


def _instantiate(decl: KernelDecl, expression: str, defines: Mapping[str, Any]) -> Signature:
    m = re.fullmatch(r"\s*(\w+)\s*(?:<(.*)>)?\s*", expression)
    if not m or m.group(1) != decl.name:
        raise LaunchError(f"bad name expression {expression!r} for kernel {decl.name}")
    targs = _split_top(m.group(2)) if m.group(2) else []
    if len(targs) != len(decl.template):
        raise LaunchError(f"{expression}: {decl.name} has template parameters {[n for _, n in decl.template]}")
    env = {name: a for (_, name), a in zip(decl.template, targs)}
    params = []
    for p in decl.params:
        ctype = _resolve(p.ctype, env)
        pointer = ctype.endswith("*")
        base = ctype.rstrip("*").strip()
        const = base.startswith("const ")
        base = base.replace("const ", "").strip()
        if not pointer and base not in SCALARS:
            raise LaunchError(f"{expression}: parameter {p.name!r} has unsupported type {ctype!r}")
        params.append(BoundParam(p.name, ctype, pointer, const, base))
    bound = None
    if decl.launch_bounds:
        first = _split_top(decl.launch_bounds)[0]
        ints = {k: int(v) for k, v in env.items() if re.fullmatch(r"-?\d+", v)}
        bound = evaluate(_expand_macros(first, defines), ints)
    return Signature(expression, params, bound)


@functools.lru_cache(maxsize=None)
def _signature(family: str, expression: str, mtime: float) -> Signature:
    name = expression.split("<", 1)[0].strip()
    decls = kernels(family)
    if name not in decls:
        raise LaunchError(f"{family}.cu has no kernel {name!r}; its kernels are {sorted(decls)}")
    return _instantiate(decls[name], expression, _defines(kernel_source(family)))


def signature(family: str, expression: str) -> Signature:
    """The :class:`Signature` of name expression ``expression`` of ``<family>.cu``."""
    return _signature(family, expression, _mtime(family))


# --------------------------------------------------------------------------- constants and size formulas


@functools.lru_cache(maxsize=None)
def _defines(code: str) -> Dict[str, Tuple[Optional[Tuple[str, ...]], str]]:
    out: Dict[str, Tuple[Optional[Tuple[str, ...]], str]] = {}
    for m in _DEFINE_RE.finditer(code):
        args = tuple(a.strip() for a in m.group(2)[1:-1].split(",")) if m.group(2) else None
        out[m.group(1)] = (args, m.group(3))
    return out


_ALLOWED = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Load, ast.Add, ast.Sub, ast.Mult,
            ast.FloorDiv, ast.Mod, ast.USub, ast.UAdd, ast.Call, ast.IfExp, ast.Compare, ast.Lt, ast.Gt, ast.LtE,
            ast.GtE, ast.Eq, ast.NotEq)


def evaluate(expr: str, env: Mapping[str, int]) -> int:
    """Evaluate a C integer expression (``+ - * / % ?:``, names from ``env``) the way C does for non-negatives."""
    text = re.sub(r"\b(\d+)[uUlL]+\b", r"\1", expr)
    text = text.replace("/", "//")
    text = re.sub(r"(.+?)\?(.+?):(.+)", r"(\2) if (\1) else (\3)", text)
    tree = ast.parse(text.strip(), mode="eval")
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise ValueError(f"cannot evaluate {expr!r} in Python: {type(node).__name__}")
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in ("max", "min")):
            raise ValueError(f"cannot evaluate {expr!r}: only max/min calls")
    return int(eval(compile(tree, "<fc-define>", "eval"), {"__builtins__": {}, "max": max, "min": min}, dict(env)))


def constant(family: str, name: str) -> int:
    """Value of the object-like ``#define name`` of ``<family>.cu`` (its headers included)."""
    defs = _defines(kernel_source(family))
    if name not in defs or defs[name][0] is not None:
        raise KeyError(f"{family}.cu defines no constant {name}")
    return evaluate(_expand_macros(defs[name][1], defs), {})


def macro(family: str, name: str, **args: int) -> int:
    """Evaluate the function-like ``#define name(...)`` of ``<family>.cu`` with keyword ``args``.

    The kernel uses the same macro for its shared-memory carve-up, so a launcher that sizes
    shared memory through it can never disagree with the kernel.
    """
    defs = _defines(kernel_source(family))
    if name not in defs or defs[name][0] is None:
        raise KeyError(f"{family}.cu defines no function-like macro {name}")
    params = defs[name][0]
    if set(params) != set(args):
        raise LaunchError(f"{name} takes {list(params)}, got {sorted(args)}")
    return evaluate(_expand_macros(defs[name][1], defs), args)


def _expand_macros(expr: str, defs: Mapping[str, Tuple[Optional[Tuple[str, ...]], str]], depth: int = 0) -> str:
    """Substitute the object-like constants (and ``sizeof`` of the storage types) named in ``expr``."""
    if depth > 8:
        raise ValueError(f"macro recursion in {expr!r}")

    def sub(m: "re.Match[str]") -> str:
        name = m.group(0)
        if name in defs and defs[name][0] is None:
            return "(" + _expand_macros(defs[name][1], defs, depth + 1) + ")"
        return name

    return re.sub(r"[A-Za-z_]\w*", sub, expr)
