"""One implementation per op, two ways in: a ``torch.library`` custom op and an eager ``autograd.Function``.

Every fastconv op is defined once, by :func:`define`, from

* its implementation (validation is the public function's job; the implementation calls
  the backend of the input's device),
* its fake (meta) kernel,
* its autograd formula (``setup_context`` + ``backward``, written with other ops, so double
  backward works),
* optionally its forward-mode derivative (``jvp``) and its batching rule (``vmap``).

From these :class:`Op` builds

* the custom op ``fastconv::<name>`` (fake kernel, ``register_autograd``, ``register_vmap``):
  what ``torch.compile``, ``torch.export``, ``make_fx`` and ``torch.library.opcheck`` see;
* an ``autograd.Function`` with the very same ``setup_context``/``backward`` (and ``jvp``
  and ``vmap`` static methods): what eager calls and the ``torch.func`` transforms use.

:meth:`Op.__call__` picks per call.  While torch is tracing -- compiling, a dispatch mode
is active (``make_fx``, export, FakeTensor, ``FlopCounterMode``), or an input is a tensor
subclass -- the custom op runs.  Otherwise, eagerly, the ``autograd.Function`` runs when a
gradient can flow (grad mode on and an input requires grad, or a ``torch.func`` transform
is active), and the bare implementation when none can: the custom-op machinery costs
about 45 us per call in Python, which is more than a small convolution.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor

__all__ = ["Op", "define", "tracing"]

_PLAIN = (torch.Tensor, torch.nn.Parameter)
_is_compiling = torch.compiler.is_compiling
_dispatch_depth = torch._C._len_torch_dispatch_stack
_functorch_level = torch._C._functorch.peek_interpreter_stack
_grad_enabled = torch.is_grad_enabled
_unwrap_dead = torch._functorch.utils.unwrap_dead_wrappers


def tracing(args) -> bool:
    """Whether a call with ``args`` must go through the custom op (torch is tracing it)."""
    if _is_compiling() or _dispatch_depth():
        return True
    for a in args:
        if isinstance(a, torch.Tensor) and type(a) not in _PLAIN:
            return True
    return False


class Op:
    """A fastconv op: callable like its implementation, routed as the module docstring says.

    Attributes
    ----------
    name : str
        The op's name in the ``fastconv`` namespace.
    impl : callable
        The implementation on plain tensors.
    custom : torch._library.custom_ops.CustomOpDef
        The registered ``torch.library`` custom op (``torch.ops.fastconv.<name>``).
    function : type
        The equivalent ``torch.autograd.Function`` subclass.
    """

    def __init__(self, name: str, impl: Callable, custom: Any, function: type) -> None:
        self.name = name
        self.impl = impl
        self.custom = custom
        self.function = function
        self.__doc__ = impl.__doc__
        # ``Function.apply`` binds the call to ``forward``'s signature with ``inspect`` (a third
        # of a small convolution's eager time) before the C++ apply; ``forward`` takes ``*args``,
        # so outside functorch transforms the C++ apply is called directly
        self._apply = super(torch.autograd.Function, function).apply
        #: Leading arguments that may hold tensors (the schema's tensor parameters come first in
        #: every fastconv op; the scan below reads no further -- a tiny call counts each one)
        self._scan = _tensor_prefix(impl)

    def __call__(self, *args):
        if _is_compiling() or _dispatch_depth():
            return self.custom(*args)
        grad = False
        for a in args[:self._scan]:  # tracing() and _needs_autograd() in one pass
            if isinstance(a, torch.Tensor):
                if type(a) not in _PLAIN:
                    return self.custom(*args)
                grad = grad or a.requires_grad
        if _functorch_level() is not None:
            return self.function.apply(*args)
        if grad and _grad_enabled():
            return self._apply(*_unwrap_dead(args))
        return self.impl(*args)

    def plain(self, *tensors: Tensor) -> bool:
        """Whether a call with these tensor arguments runs the bare implementation: eagerly, on
        plain tensors, outside ``torch.func`` transforms, with no gradient able to flow.  Public
        functions use it to call their backend directly on tiny inputs."""
        if _is_compiling() or _dispatch_depth() or _functorch_level() is not None:
            return False
        grad = _grad_enabled()
        for a in tensors:
            if type(a) not in _PLAIN or (grad and a.requires_grad):
                return False
        return True

    def __repr__(self) -> str:
        return f"<fastconv op fastconv::{self.name}>"


def _tensor_prefix(impl: Callable) -> int:
    """The number of leading parameters of ``impl`` up to its last tensor-annotated one (all of
    them when an annotation cannot be read)."""
    import inspect
    import typing
    params = list(inspect.signature(impl).parameters.values())
    try:
        hints = typing.get_type_hints(impl)
    except Exception:  # noqa: BLE001 - unresolvable annotations: scan everything
        return len(params)
    last = 0
    for i, p in enumerate(params):
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            return len(params)
        hint = hints.get(p.name)
        if hint is None or "Tensor" in repr(hint):
            last = i + 1
    return last


def _function(name: str, impl: Callable, setup_context: Optional[Callable], backward: Optional[Callable],
              jvp: Optional[Callable], vmap: Optional[Callable]) -> type:
    body = {"__doc__": f"Eager autograd path of ``fastconv::{name}``.",
            "forward": staticmethod(lambda *args: impl(*args))}
    if setup_context is not None:
        body["setup_context"] = staticmethod(setup_context)
    else:
        body["setup_context"] = staticmethod(lambda ctx, inputs, output: None)
    if backward is not None:
        body["backward"] = staticmethod(backward)
    else:
        def _no_backward(ctx, *grads):
            raise RuntimeError(f"fastconv::{name} is not differentiable")
        body["backward"] = staticmethod(_no_backward)
    if jvp is not None:
        body["jvp"] = staticmethod(jvp)
    if vmap is not None:
        body["vmap"] = staticmethod(vmap)
    return type(f"{name}_function", (torch.autograd.Function,), body)


def define(name: str, impl: Callable, fake: Callable, *, setup_context: Optional[Callable] = None,
           backward: Optional[Callable] = None, jvp: Optional[Callable] = None,
           vmap: Optional[Callable] = None) -> Op:
    """Register ``fastconv::<name>`` and its eager twin from one implementation.

    Parameters
    ----------
    name : str
        Op name in the ``fastconv`` namespace.
    impl : callable
        The implementation, with type annotations (the custom op's schema is inferred from
        them).  It must not return an input or a view of one.
    fake : callable
        The fake (meta) kernel: same arguments, returns empty outputs of the right shapes.
    setup_context, backward : callable, optional
        The autograd formula, in ``torch.library.register_autograd``'s form.
    jvp : callable, optional
        Forward-mode derivative ``jvp(ctx, *tangents)`` (``autograd.Function.jvp``); it reads
        what ``setup_context`` saved with ``ctx.save_for_forward``.
    vmap : callable, optional
        Batching rule ``vmap(info, in_dims, *args) -> (outputs, out_dims)``.

    Returns
    -------
    Op
    """
    custom = torch.library.custom_op(f"fastconv::{name}", mutates_args=())(impl)
    custom.register_fake(fake)
    if backward is not None:
        custom.register_autograd(backward, setup_context=setup_context)
    if vmap is not None:
        custom.register_vmap(vmap)
    return Op(name, impl, custom, _function(name, impl, setup_context, backward, jvp, vmap))
