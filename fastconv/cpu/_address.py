"""Arrays at raw addresses inside Numba kernels, for the smallest calls.

Turning a tensor into a NumPy view costs about half a microsecond, as much as a tiny
kernel's whole work; a tensor's ``data_ptr()`` costs a tenth of that.  Entry points for tiny
calls therefore take addresses and sizes, and rebuild the arrays with :func:`numba.carray`
through :func:`pointer_like`.  The element type comes from a *witness*, a NumPy scalar of
that type (:data:`WITNESS`), so one entry point compiles once per dtype.

The caller guarantees what NumPy would have checked: the tensor is C-contiguous, lives on
the CPU, holds the witness's dtype, is not a lazily negated view (``is_neg()``: its memory holds
the negatives) and outlives the call.
"""
from __future__ import annotations

import numpy as np
import torch
from numba import types
from numba.extending import intrinsic

__all__ = ["pointer_like", "WITNESS", "NO_INDEX"]

#: The witness scalar of each CPU dtype the tiny entry points take.
WITNESS = {torch.float32: np.float32(0), torch.float64: np.float64(0)}

#: The int64 witness (index arrays).
NO_INDEX = np.int64(0)


@intrinsic
def pointer_like(typingctx, addr, witness):
    """``addr`` (int64) as a pointer to elements of ``witness``'s type, for ``numba.carray``."""
    if not isinstance(addr, types.Integer) or not isinstance(witness, (types.Float, types.Integer)):
        return None
    sig = types.CPointer(witness)(types.int64, witness)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))
    return sig, codegen
