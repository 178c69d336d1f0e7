"""Register-blocked SIMD micro-kernels, written as LLVM IR and called from Numba.

LLVM's loop vectoriser keeps accumulators in registers only inside one vectorised
iteration, so a reduction that is long (a convolution over channels and taps) and whose
vector axis is not innermost cannot be expressed in plain Numba without reloading the
accumulators every step.  These three kernels are therefore written directly in LLVM IR,
with explicit vector types, as Numba ``@intrinsic`` functions that inline into the jitted
kernels calling them (and are cached on disk with them):

* :func:`gemm_tile` -- ``T[tbase + m*tstride + j] = B[bbase + m] + sum_k W[wbase + k*MR + m] *
  X[xbase + offs[obase + k] + j]`` for ``m < mvalid``, ``j < tvalid`` (masked stores):
  ``MR`` broadcast weights times ``NV`` vectors of ``L`` lanes, ``MR * NV`` accumulators held in
  registers for the whole ``k`` loop.  ``offs`` is an offset table (an indirect GEMM: the
  taps of a convolution, or the channel pitch of a Winograd GEMM).
* :func:`gather_tile` -- ``T[tbase + m*tstride + j] (+)= sum_r A[abase + aoff[m] + sa[r]] *
  B[bbase + sb[r] + j]``: :func:`gemm_tile` with each broadcast gathered from its own row of
  ``A`` (the taps of a weight gradient) and both operands' steps from tables.
* :func:`dot_tile` -- ``acc[abase + (m*NR + r)*L + l] += sum_s G[gbase + m*gstride + sg[s] + l] *
  X[xbase + offs[r] + sx[s] + l]``: ``MR x NR`` vector accumulators over a reduction whose
  steps ``(sg, sx)`` come from two tables, kept as vectors across calls (weight gradients);
  :func:`lane_sums` adds the lanes in a fixed tree order at the end.
* :func:`lane_taps` / :func:`lane_dots` -- the same sums with a channel in each lane (depthwise
  layers): per-lane weights instead of broadcasts, and per-lane dot products over pixels;
  :func:`lane_row_taps` loads a kernel row's inputs once for all its taps.
* :func:`moments` -- ``sum(a - sa)`` and ``sum((a - sa) * (b - sb))`` over whole vectors in float64
  lanes (batch statistics and their gradients).
* :func:`transpose_tile` -- an ``L x L`` block transpose through ``shufflevector`` (layout changes).
* :func:`transform2d` -- ``Y = Lm X Rm^T`` for small constant matrices, on tiles whose elements
  are vectors of lanes (Winograd transforms): straight-line adds in registers.

``L`` is the number of lanes of a 512-bit vector: 16 for float32, 8 for float64.  Every
kernel has a fixed operation order, so results do not depend on the caller's threading.
No kernel checks bounds: the callers size their buffers (see each caller's contract).
"""
from __future__ import annotations

import functools

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .._numba import njit

__all__ = ["lanes", "gemm_tile", "gather_tile", "dot_tile", "lane_taps", "lane_row_taps", "lane_dots", "moments",
           "SUM_CHAINS", "sums", "lane_sums", "copy_short", "copy_vector", "transpose_tile", "transform2d"]

_I64 = ir.IntType(64)
_I32 = ir.IntType(32)


def lanes(dtype) -> int:
    """Lanes of one 512-bit vector of ``dtype`` (float32: 16, float64: 8)."""
    return 64 // np.dtype(dtype).itemsize


def _vec(context, nbtype, L: int) -> ir.VectorType:
    return ir.VectorType(context.get_value_type(nbtype), L)


def _data(context, builder, aryty, value):
    return context.make_array(aryty)(context, builder, value).data


def _at(context, builder, at, args, i: int):
    """A pointer to element ``args[i + 1]`` of the array ``args[i]`` (an intrinsic's array and its
    base; ``at`` the argument types)."""
    return builder.gep(_data(context, builder, at[i], args[i]), [args[i + 1]])


def _c(v: int) -> ir.Constant:
    return ir.Constant(_I64, v)


def _vload(builder, ptr, vty, align):
    return builder.load(builder.bitcast(ptr, vty.as_pointer()), align=align)


def _vstore(builder, val, ptr, vty, align):
    builder.store(val, builder.bitcast(ptr, vty.as_pointer()), align=align)


def _splat(builder, scalar, vty: ir.VectorType):
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), scalar, ir.Constant(_I32, 0))
    mask = ir.Constant(ir.VectorType(_I32, vty.count), [0] * vty.count)
    return builder.shuffle_vector(v, ir.Constant(vty, ir.Undefined), mask)


def _fma(builder, vty: ir.VectorType, bits: int):
    name = f"llvm.fma.v{vty.count}f{bits}"
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty, vty, vty]), name)


def _masked_store(builder, vty: ir.VectorType, bits: int):
    mty = ir.VectorType(ir.IntType(1), vty.count)
    fnty = ir.FunctionType(ir.VoidType(), [vty, vty.as_pointer(), _I32, mty])
    return cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.store.v{vty.count}f{bits}.p0")


def _no_unroll(module):
    """Loop metadata ``!{self, !{"llvm.loop.unroll.disable"}}``: an unrolled micro-kernel loop would
    load the broadcasts of two steps at once and spill accumulators (measured: 100 GF/s, not 250)."""
    flag = module.add_metadata([ir.MetaDataString(module, "llvm.loop.unroll.disable")])
    node = module.add_metadata([flag, flag])
    node.operands = (node, flag)
    return node


def _counted_loop(builder, count, carried, body):
    """``for i in range(count)`` with loop-carried values ``carried``; ``body(i, values) -> values``.

    Returns the final values (the initial ones when ``count <= 0``).
    """
    entry = builder.block
    loop = builder.append_basic_block("simd.loop")
    done = builder.append_basic_block("simd.done")
    builder.cbranch(builder.icmp_signed(">", count, _c(0)), loop, done)
    builder.position_at_end(loop)
    i = builder.phi(_I64)
    i.add_incoming(_c(0), entry)
    phis = []
    for v in carried:
        p = builder.phi(v.type)
        p.add_incoming(v, entry)
        phis.append(p)
    new = body(i, phis)
    nxt = builder.add(i, _c(1))
    tail = builder.block
    i.add_incoming(nxt, tail)
    for p, v in zip(phis, new):
        p.add_incoming(v, tail)
    br = builder.cbranch(builder.icmp_signed("<", nxt, count), loop, done)
    br.set_metadata("llvm.loop", _no_unroll(builder.module))
    builder.position_at_end(done)
    out = []
    for v0, v1 in zip(carried, new):
        p = builder.phi(v0.type)
        p.add_incoming(v0, entry)
        p.add_incoming(v1, tail)
        out.append(p)
    return out


def _dtype_of(aryty) -> np.dtype:
    return np.dtype(str(aryty.dtype))


def _fma_types(context, builder, aryty):
    """A micro-kernel's element dtype, lanes, vector type and fused multiply-add, from its first
    array argument's Numba type."""
    dt = _dtype_of(aryty)
    L = lanes(dt)
    vty = _vec(context, aryty.dtype, L)
    return dt, L, vty, _fma(builder, vty, dt.itemsize * 8)


@functools.lru_cache(maxsize=None)
def gemm_tile(MR: int, NV: int):
    """The broadcast-GEMM micro-kernel for ``MR`` rows of ``NV`` vectors.

    Call it from Numba as
    ``kern(X, xbase, W, wbase, offs, obase, K, B, bbase, T, tbase, tstride, mvalid, tvalid, accumulate)``:
    ``X``, ``W``, ``B`` and ``T`` 1-D arrays of one float dtype (``L`` lanes, see :func:`lanes`),
    ``offs`` a 1-D int64 array, the rest int64.  It computes ``MR`` rows of ``NV * L``
    sums, each started from ``B[bbase + m]`` -- or, when ``accumulate`` is nonzero, from the
    tile already in ``T`` (all ``NV * L`` elements of all ``MR`` rows are then read) -- and
    stores the first ``tvalid`` elements of the first ``mvalid`` rows at ``T[tbase + m * tstride:]``
    (masked stores: nothing else is touched).
    """

    @intrinsic
    def kern(typingctx, X, xbase, W, wbase, offs, obase, K, B, bbase, T, tbase, tstride, mvalid, tvalid, accumulate):
        sig = types.void(X, xbase, W, wbase, offs, obase, K, B, bbase, T, tbase, tstride, mvalid, tvalid, accumulate)

        def codegen(context, builder, signature, args):
            (X_, xbase_, W_, wbase_, offs_, obase_, K_, B_, bbase_, T_, tbase_, tstride_, mvalid_, tvalid_,
             accumulate_) = args
            at = signature.args
            dt, L, vty, fma = _fma_types(context, builder, at[0])
            bits = dt.itemsize * 8
            xp = _at(context, builder, at, args, 0)
            wp = _at(context, builder, at, args, 2)
            op = _at(context, builder, at, args, 4)
            bp = _at(context, builder, at, args, 7)
            tp = _at(context, builder, at, args, 9)
            init = []
            acc_in = builder.icmp_signed("!=", accumulate_, _c(0))
            for m in range(MR):
                b = _splat(builder, builder.load(builder.gep(bp, [_c(m)])), vty)
                row = builder.gep(tp, [builder.mul(_c(m), tstride_)])
                with builder.if_else(acc_in) as (then, otherwise):
                    with then:
                        loaded = [_vload(builder, builder.gep(row, [_c(v * L)]), vty, dt.itemsize) for v in range(NV)]
                        then_end = builder.block
                    with otherwise:
                        else_end = builder.block
                for v in range(NV):
                    phi = builder.phi(vty)
                    phi.add_incoming(loaded[v], then_end)
                    phi.add_incoming(b, else_end)
                    init.append(phi)

            def body(k, acc):
                xk = builder.gep(xp, [builder.load(builder.gep(op, [k]))])
                xv = [_vload(builder, builder.gep(xk, [_c(v * L)]), vty, dt.itemsize) for v in range(NV)]
                wk = builder.gep(wp, [builder.mul(k, _c(MR))])
                new = []
                for m in range(MR):
                    w = _splat(builder, builder.load(builder.gep(wk, [_c(m)])), vty)
                    new.extend(builder.call(fma, [w, xv[v], acc[m * NV + v]]) for v in range(NV))
                return new

            res = _counted_loop(builder, K_, init, body)
            store = _masked_store(builder, vty, bits)
            lane = ir.Constant(ir.VectorType(_I64, L), list(range(L)))
            cols = [builder.icmp_signed("<", builder.add(lane, _splat(builder, _c(v * L), ir.VectorType(_I64, L))),
                                        _splat(builder, tvalid_, ir.VectorType(_I64, L))) for v in range(NV)]
            for m in range(MR):
                row = builder.gep(tp, [builder.mul(_c(m), tstride_)])
                live = _splat(builder, builder.icmp_signed("<", _c(m), mvalid_), ir.VectorType(ir.IntType(1), L))
                for v in range(NV):
                    ptr = builder.bitcast(builder.gep(row, [_c(v * L)]), vty.as_pointer())
                    builder.call(store, [res[m * NV + v], ptr, ir.Constant(_I32, dt.itemsize),
                                         builder.and_(cols[v], live)])
            return context.get_dummy_value()

        return sig, codegen

    return kern


@functools.lru_cache(maxsize=None)
def gather_tile(MR: int, NV: int):
    """The gathered-broadcast GEMM micro-kernel for ``MR`` rows of ``NV`` vectors.

    Call it from Numba as ``kern(A, abase, aoff, aob, sa, B, bbase, sb, R, T, tbase, tstride, accumulate)``:
    ``A``, ``B``, ``T`` 1-D arrays of one float dtype; ``aoff``, ``sa``, ``sb`` 1-D int64 arrays;
    the rest int64.  For the steps ``r < R`` in order, row ``m`` of the ``MR x NV*L`` register tile
    adds ``A[abase + aoff[aob + m] + sa[r]] * B[bbase + sb[r]:][:NV*L]``; the tile starts from
    zero, or from ``T`` when ``accumulate`` is nonzero, and is stored to ``T[tbase + m*tstride:]``.
    """

    @intrinsic
    def kern(typingctx, A, abase, aoff, aob, sa, B, bbase, sb, R, T, tbase, tstride, accumulate):
        sig = types.void(A, abase, aoff, aob, sa, B, bbase, sb, R, T, tbase, tstride, accumulate)

        def codegen(context, builder, signature, args):
            A_, abase_, aoff_, aob_, sa_, B_, bbase_, sb_, R_, T_, tbase_, tstride_, accumulate_ = args
            at = signature.args
            dt, L, vty, fma = _fma_types(context, builder, at[0])
            ap = _at(context, builder, at, args, 0)
            op = _at(context, builder, at, args, 2)
            sap = _data(context, builder, at[4], sa_)
            bp = _at(context, builder, at, args, 5)
            sbp = _data(context, builder, at[7], sb_)
            tp = _at(context, builder, at, args, 9)
            rows = [builder.gep(ap, [builder.load(builder.gep(op, [_c(m)]))]) for m in range(MR)]
            tptr = [[builder.gep(builder.gep(tp, [builder.mul(_c(m), tstride_)]), [_c(v * L)]) for v in range(NV)]
                    for m in range(MR)]
            acc_in = builder.icmp_signed("!=", accumulate_, _c(0))
            zero = ir.Constant(vty, [0.0] * L)
            init = [builder.select(acc_in, _vload(builder, tptr[m][v], vty, dt.itemsize), zero)
                    for m in range(MR) for v in range(NV)]

            def body(r, acc):
                a_off = builder.load(builder.gep(sap, [r]))
                b_row = builder.gep(bp, [builder.load(builder.gep(sbp, [r]))])
                bv = [_vload(builder, builder.gep(b_row, [_c(v * L)]), vty, dt.itemsize) for v in range(NV)]
                new = []
                for m in range(MR):
                    a = _splat(builder, builder.load(builder.gep(rows[m], [a_off])), vty)
                    new.extend(builder.call(fma, [a, bv[v], acc[m * NV + v]]) for v in range(NV))
                return new

            res = _counted_loop(builder, R_, init, body)
            for m in range(MR):
                for v in range(NV):
                    _vstore(builder, res[m * NV + v], tptr[m][v], vty, dt.itemsize)
            return context.get_dummy_value()

        return sig, codegen

    return kern


@functools.lru_cache(maxsize=None)
def dot_tile(MR: int, NR: int):
    """The dot-product micro-kernel for an ``MR x NR`` tile.

    Call it from Numba as ``kern(G, gbase, gstride, X, xbase, offs, obase, sg, sx, S, acc, abase)``:
    ``G``, ``X``, ``acc`` 1-D arrays of one float dtype; ``offs``, ``sg``, ``sx`` 1-D int64 arrays;
    the rest int64.  For every step ``s < S``, in order, it adds ``G[gbase + m*gstride + sg[s] + l] *
    X[xbase + offs[obase + r] + sx[s] + l]`` to lane ``l`` of the vector accumulator
    ``acc[abase + (m*NR + r)*L:]``, which it loads first and stores back.
    """

    @intrinsic
    def kern(typingctx, G, gbase, gstride, X, xbase, offs, obase, sg, sx, S, acc, abase):
        sig = types.void(G, gbase, gstride, X, xbase, offs, obase, sg, sx, S, acc, abase)

        def codegen(context, builder, signature, args):
            (G_, gbase_, gstride_, X_, xbase_, offs_, obase_, sg_, sx_, S_, acc_, abase_) = args
            at = signature.args
            dt, L, vty, fma = _fma_types(context, builder, at[0])
            gp = _at(context, builder, at, args, 0)
            xp = _at(context, builder, at, args, 3)
            op = _at(context, builder, at, args, 5)
            sgp = _data(context, builder, at[7], sg_)
            sxp = _data(context, builder, at[8], sx_)
            ap = _at(context, builder, at, args, 10)
            grow = [builder.gep(gp, [builder.mul(_c(m), gstride_)]) for m in range(MR)]
            xcol = [builder.gep(xp, [builder.load(builder.gep(op, [_c(r)]))]) for r in range(NR)]
            aptr = [builder.gep(ap, [_c(i * L)]) for i in range(MR * NR)]
            init = [_vload(builder, a, vty, dt.itemsize) for a in aptr]

            def body(s, acc):
                gs = builder.load(builder.gep(sgp, [s]))
                xs = builder.load(builder.gep(sxp, [s]))
                gv = [_vload(builder, builder.gep(grow[m], [gs]), vty, dt.itemsize) for m in range(MR)]
                xv = [_vload(builder, builder.gep(xcol[r], [xs]), vty, dt.itemsize) for r in range(NR)]
                return [builder.call(fma, [gv[m], xv[r], acc[m * NR + r]]) for m in range(MR) for r in range(NR)]

            res = _counted_loop(builder, S_, init, body)
            for a, v in zip(aptr, res):
                _vstore(builder, v, a, vty, dt.itemsize)
            return context.get_dummy_value()

        return sig, codegen

    return kern


def _store_vectors(builder, vals, ptr, vty, align):
    """Store the vectors ``vals`` one after the other from ``ptr``."""
    for i, v in enumerate(vals):
        _vstore(builder, v, builder.gep(ptr, [_c(i * vty.count)]), vty, align)


@functools.lru_cache(maxsize=None)
def lane_taps(NB: int):
    """The lane-wise tap sum of ``NB`` outputs (a depthwise convolution, channels in the lanes).

    Call it from Numba as ``kern(P, pbase, pstep, W, wbase, offs, obase, K, B, bbase, Z, zbase)``:
    ``P``, ``W``, ``B``, ``Z`` 1-D arrays of one float dtype (``L`` lanes), ``offs`` a 1-D int64
    array, the rest int64.  For ``i < NB`` it stores ``Z[zbase + i*L + l] = B[bbase + l] + sum_k
    W[wbase + k*L + l] * P[pbase + i*pstep + offs[obase + k] + l]`` (all ``NB`` vectors; the sum
    over ``k`` in order): every lane its own channel, with its own weights -- no broadcasts.
    """

    @intrinsic
    def kern(typingctx, P, pbase, pstep, W, wbase, offs, obase, K, B, bbase, Z, zbase):
        sig = types.void(P, pbase, pstep, W, wbase, offs, obase, K, B, bbase, Z, zbase)

        def codegen(context, builder, signature, args):
            P_, pbase_, pstep_, W_, wbase_, offs_, obase_, K_, B_, bbase_, Z_, zbase_ = args
            at = signature.args
            dt, L, vty, fma = _fma_types(context, builder, at[0])
            pp = _at(context, builder, at, args, 0)
            wp = _at(context, builder, at, args, 3)
            op = _at(context, builder, at, args, 5)
            zp = _at(context, builder, at, args, 10)
            b = _vload(builder, _at(context, builder, at, args, 8), vty, dt.itemsize)
            cols = [builder.gep(pp, [builder.mul(_c(i), pstep_)]) for i in range(NB)]

            def body(k, acc):
                off = builder.load(builder.gep(op, [k]))
                w = _vload(builder, builder.gep(wp, [builder.mul(k, _c(L))]), vty, dt.itemsize)
                return [builder.call(fma, [w, _vload(builder, builder.gep(cols[i], [off]), vty, dt.itemsize), acc[i]])
                        for i in range(NB)]

            _store_vectors(builder, _counted_loop(builder, K_, [b] * NB, body), zp, vty, dt.itemsize)
            return context.get_dummy_value()

        return sig, codegen

    return kern


@functools.lru_cache(maxsize=None)
def lane_row_taps(NB: int, KW: int):
    """:func:`lane_taps` for ``KW`` consecutive taps per kernel row (stride and dilation 1 along
    the row): each row's ``NB + KW - 1`` input vectors are loaded once and serve all its taps.

    Call it from Numba as ``kern(P, pbase, W, wbase, roffs, KH, B, bbase, Z, zbase)``: for ``i < NB``
    it stores ``Z[zbase + i*L + l] = B[bbase + l] + sum_r sum_kx W[wbase + (r*KW + kx)*L + l] *
    P[pbase + roffs[r] + (i + kx)*L + l]`` (rows ``r < KH`` in order, taps in order within a row).
    """

    @intrinsic
    def kern(typingctx, P, pbase, W, wbase, roffs, KH, B, bbase, Z, zbase):
        sig = types.void(P, pbase, W, wbase, roffs, KH, B, bbase, Z, zbase)

        def codegen(context, builder, signature, args):
            P_, pbase_, W_, wbase_, roffs_, KH_, B_, bbase_, Z_, zbase_ = args
            at = signature.args
            dt, L, vty, fma = _fma_types(context, builder, at[0])
            pp = _at(context, builder, at, args, 0)
            wp = _at(context, builder, at, args, 2)
            rp = _data(context, builder, at[4], roffs_)
            zp = _at(context, builder, at, args, 8)
            b = _vload(builder, _at(context, builder, at, args, 6), vty, dt.itemsize)

            def body(r, acc):
                row = builder.gep(pp, [builder.load(builder.gep(rp, [r]))])
                xs = [_vload(builder, builder.gep(row, [_c(j * L)]), vty, dt.itemsize) for j in range(NB + KW - 1)]
                wrow = builder.gep(wp, [builder.mul(r, _c(KW * L))])
                acc = list(acc)
                for kx in range(KW):
                    w = _vload(builder, builder.gep(wrow, [_c(kx * L)]), vty, dt.itemsize)
                    acc = [builder.call(fma, [w, xs[i + kx], acc[i]]) for i in range(NB)]
                return acc

            _store_vectors(builder, _counted_loop(builder, KH_, [b] * NB, body), zp, vty, dt.itemsize)
            return context.get_dummy_value()

        return sig, codegen

    return kern


@functools.lru_cache(maxsize=None)
def lane_dots(KB: int):
    """The lane-wise dot products of ``KB`` taps (a depthwise weight gradient, channels in the lanes).

    Call it from Numba as ``kern(G, gbase, P, pbase, pstep, offs, obase, S, acc, abase)``: ``G``,
    ``P``, ``acc`` 1-D arrays of one float dtype (``L`` lanes), ``offs`` a 1-D int64 array, the rest
    int64.  For every step ``s < S``, in order, it adds ``G[gbase + s*L + l] * P[pbase + s*pstep +
    offs[obase + k] + l]`` to lane ``l`` of the accumulator ``acc[abase + k*L:]`` (``k < KB``), which
    it loads first and stores back.
    """

    @intrinsic
    def kern(typingctx, G, gbase, P, pbase, pstep, offs, obase, S, acc, abase):
        sig = types.void(G, gbase, P, pbase, pstep, offs, obase, S, acc, abase)

        def codegen(context, builder, signature, args):
            G_, gbase_, P_, pbase_, pstep_, offs_, obase_, S_, acc_, abase_ = args
            at = signature.args
            dt, L, vty, fma = _fma_types(context, builder, at[0])
            gp = _at(context, builder, at, args, 0)
            pp = _at(context, builder, at, args, 2)
            op = _at(context, builder, at, args, 5)
            ap = _at(context, builder, at, args, 8)
            taps = [builder.gep(pp, [builder.load(builder.gep(op, [_c(k)]))]) for k in range(KB)]
            aptr = [builder.gep(ap, [_c(k * L)]) for k in range(KB)]
            init = [_vload(builder, a, vty, dt.itemsize) for a in aptr]

            def body(s, acc):
                g = _vload(builder, builder.gep(gp, [builder.mul(s, _c(L))]), vty, dt.itemsize)
                at_s = builder.mul(s, pstep_)
                return [builder.call(fma, [g, _vload(builder, builder.gep(taps[k], [at_s]), vty, dt.itemsize), acc[k]])
                        for k in range(KB)]

            res = _counted_loop(builder, S_, init, body)
            for a, v in zip(aptr, res):
                _vstore(builder, v, a, vty, dt.itemsize)
            return context.get_dummy_value()

        return sig, codegen

    return kern


@functools.lru_cache(maxsize=None)
def moments():
    """The two-moment reduction over whole vectors, accumulated in float64.

    Call it from Numba as ``kern(A, abase, B, bbase, nvec, sa, sb, acc)``: ``A`` and ``B`` 1-D
    arrays of one float dtype (``L`` lanes), ``acc`` a 1-D float64 array of ``2 * L``, ``sa`` and
    ``sb`` float64 shifts, the rest int64.  For ``i < nvec * L``, in order, it adds
    ``a = A[abase + i] - sa`` to ``acc[i % L]`` and ``a * (B[bbase + i] - sb)`` to
    ``acc[L + i % L]`` (the elements widened to float64 first), loading ``acc`` first and storing it
    back.  With ``A is B`` and ``sa == sb`` the second half sums squares (batch variances);
    :func:`lane_sums` adds the lanes.
    """

    @intrinsic
    def kern(typingctx, A, abase, B, bbase, nvec, sa, sb, acc):
        sig = types.void(A, abase, B, bbase, nvec, sa, sb, acc)

        def codegen(context, builder, signature, args):
            A_, abase_, B_, bbase_, nvec_, sa_, sb_, acc_ = args
            at = signature.args
            dt = _dtype_of(at[0])
            L = lanes(dt)
            vin = _vec(context, at[0].dtype, L)
            vd = ir.VectorType(ir.DoubleType(), L)
            fma = _fma(builder, vd, 64)
            ap = _at(context, builder, at, args, 0)
            bp = _at(context, builder, at, args, 2)
            cp = _data(context, builder, at[7], acc_)
            widen = (lambda v: v) if dt.itemsize == 8 else (lambda v: builder.fpext(v, vd))
            shift_a, shift_b = _splat(builder, sa_, vd), _splat(builder, sb_, vd)
            init = [_vload(builder, builder.gep(cp, [_c(h * L)]), vd, 8) for h in range(2)]

            def body(i, acc):
                off = builder.mul(i, _c(L))
                a = builder.fsub(widen(_vload(builder, builder.gep(ap, [off]), vin, dt.itemsize)), shift_a)
                b = builder.fsub(widen(_vload(builder, builder.gep(bp, [off]), vin, dt.itemsize)), shift_b)
                return [builder.fadd(acc[0], a), builder.call(fma, [a, b, acc[1]])]

            res = _counted_loop(builder, nvec_, init, body)
            for h in range(2):
                _vstore(builder, res[h], builder.gep(cp, [_c(h * L)]), vd, 8)
            return context.get_dummy_value()

        return sig, codegen

    return kern


#: Accumulator chains of :func:`sums`: a float64 add's latency is four cycles, so one chain
#: reached about a quarter of the adds a core can issue (a bias gradient ran at 2.5x torch's sum).
SUM_CHAINS = 4


def sums():
    """The sum of whole vectors, accumulated in float64 over :data:`SUM_CHAINS` chains.

    Call it from Numba as ``kern(A, abase, nvec, acc)``: ``A`` a 1-D float array (``L`` lanes),
    ``acc`` a 1-D float64 array of ``SUM_CHAINS * L``, the rest int64.  Vector ``i < nvec`` of
    ``A[abase:]`` (widened to float64) is added to chain ``i % SUM_CHAINS`` (``acc[chain * L:]``), in
    order: the result depends only on ``nvec``.  ``acc`` is loaded first and stored back.
    """

    @intrinsic
    def kern(typingctx, A, abase, nvec, acc):
        sig = types.void(A, abase, nvec, acc)

        def codegen(context, builder, signature, args):
            A_, abase_, nvec_, acc_ = args
            at = signature.args
            dt = _dtype_of(at[0])
            L = lanes(dt)
            K = SUM_CHAINS
            vin = _vec(context, at[0].dtype, L)
            vd = ir.VectorType(ir.DoubleType(), L)
            ap = _at(context, builder, at, args, 0)
            cp = _data(context, builder, at[3], acc_)
            widen = (lambda v: v) if dt.itemsize == 8 else (lambda v: builder.fpext(v, vd))
            init = [_vload(builder, builder.gep(cp, [_c(h * L)]), vd, 8) for h in range(K)]

            def load(i):
                return widen(_vload(builder, builder.gep(ap, [builder.mul(i, _c(L))]), vin, dt.itemsize))

            def body(j, acc):  # K vectors a step, one per chain
                base = builder.mul(j, _c(K))
                return [builder.fadd(acc[h], load(builder.add(base, _c(h)))) for h in range(K)]

            full = builder.sdiv(nvec_, _c(K))
            res = _counted_loop(builder, full, init, body)
            rest = builder.sub(nvec_, builder.mul(full, _c(K)))
            for h in range(K - 1):  # the last nvec % K vectors, chains 0, 1, ...
                live = builder.icmp_signed(">", rest, _c(h))
                with builder.if_then(live):
                    v = builder.fadd(res[h], load(builder.add(builder.mul(full, _c(K)), _c(h))))
                    _vstore(builder, v, builder.gep(cp, [_c(h * L)]), vd, 8)
                with builder.if_then(builder.not_(live)):
                    _vstore(builder, res[h], builder.gep(cp, [_c(h * L)]), vd, 8)
            _vstore(builder, res[K - 1], builder.gep(cp, [_c((K - 1) * L)]), vd, 8)
            return context.get_dummy_value()

        return sig, codegen

    return kern


@njit(cache=True, nogil=True)
def lane_sums(acc, out):  # pragma: no cover - numba
    """out[i] += the lanes of ``acc[i*L:(i+1)*L]`` summed pairwise in a fixed tree order."""
    L = 64 // acc.itemsize
    v = np.empty(L, dtype=acc.dtype)
    for i in range(out.shape[0]):
        v[:] = acc[i * L:(i + 1) * L]
        n = L
        while n > 1:
            h = n // 2
            for j in range(h):
                v[j] = v[j] + v[j + h]
            n = h
        out[i] += v[0]


def _src_dst(context, builder, at, args, d: int):
    """The prologue of a copy intrinsic whose arguments are ``(src, sbase, ...)`` with ``(dst,
    dbase)`` at position ``d``: the dtype, its lanes, the vector type and the two base pointers."""
    dt = _dtype_of(at[0])
    L = lanes(dt)
    vty = _vec(context, at[0].dtype, L)
    sp = _at(context, builder, at, args, 0)
    dp = _at(context, builder, at, args, d)
    return dt, L, vty, sp, dp


def _masked_load(builder, vty: ir.VectorType, bits: int):
    mty = ir.VectorType(ir.IntType(1), vty.count)
    fnty = ir.FunctionType(vty, [vty.as_pointer(), _I32, mty, vty])
    return cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.load.v{vty.count}f{bits}.p0")


@functools.lru_cache(maxsize=None)
def copy_short():
    """A copy of at most one vector.

    Call it from Numba as ``kern(src, sbase, dst, dbase, n)`` (1-D arrays of one float dtype,
    int64 offsets): ``dst[dbase + i] = src[sbase + i]`` for ``i < n <= L``, through one masked load
    and one masked store (nothing else is read or written).  Short rows copied by a loop run its
    scalar remainder only: a 14-element row is 14 loads and stores.
    """

    def codegen(context, builder, signature, args):
        dt, L, vty, sp, dp = _src_dst(context, builder, signature.args, args, 2)
        bits = dt.itemsize * 8
        lane = ir.Constant(ir.VectorType(_I64, L), list(range(L)))
        mask = builder.icmp_signed("<", lane, _splat(builder, args[4], ir.VectorType(_I64, L)))
        align = ir.Constant(_I32, dt.itemsize)
        v = builder.call(_masked_load(builder, vty, bits), [builder.bitcast(sp, vty.as_pointer()), align, mask,
                                                            ir.Constant(vty, [0.0] * L)])
        builder.call(_masked_store(builder, vty, bits), [v, builder.bitcast(dp, vty.as_pointer()), align, mask])
        return context.get_dummy_value()

    @intrinsic
    def kern(typingctx, src, sbase, dst, dbase, n):
        return types.void(src, sbase, dst, dbase, n), codegen

    return kern


@functools.lru_cache(maxsize=None)
def copy_vector():
    """A copy of one whole vector.

    Call it from Numba as ``kern(src, sbase, dst, dbase)`` (1-D arrays of one float dtype, int64
    offsets): ``dst[dbase + i] = src[sbase + i]`` for ``i < L``, one unaligned vector load and
    store.  (A loop of ``L`` element copies between two arrays that may overlap compiles to
    ``L`` scalar copies: the compiler cannot order them as one vector.)
    """

    def codegen(context, builder, signature, args):
        dt, L, vty, sp, dp = _src_dst(context, builder, signature.args, args, 2)
        _vstore(builder, _vload(builder, sp, vty, dt.itemsize), dp, vty, dt.itemsize)
        return context.get_dummy_value()

    @intrinsic
    def kern(typingctx, src, sbase, dst, dbase):
        return types.void(src, sbase, dst, dbase), codegen

    return kern


@functools.lru_cache(maxsize=None)
def transpose_tile(partial: bool = False, add: bool = False):
    """The ``L x L`` block transpose.

    Call it from Numba as ``kern(src, sbase, sstride, dst, dbase, dstride)`` (1-D arrays of
    one float dtype, int64 offsets): ``dst[dbase + j*dstride + i] = src[sbase + i*sstride + j]`` for
    ``i, j < L``.  Four (float32) or three (float64) levels of off-diagonal block swaps, one
    two-source shuffle per row and level.  With ``partial``, ``kern(..., dstride, rows)`` stores
    the rows ``j < rows`` only (all ``L`` source rows are read whole).  With ``add``,
    ``kern(..., dstride, vec, vbase)`` adds ``vec[vbase + j]`` to destination row ``j`` (one
    addition per element, as a pass after the transpose would: a bias).
    """
    if partial and add:
        raise ValueError("transpose_tile: partial and add are not combined")

    def codegen(context, builder, signature, args):
        src_, sbase_, sstride_, dst_, dbase_, dstride_ = args[:6]
        dt, L, vty, sp, dp = _src_dst(context, builder, signature.args, args, 3)
        rows = [_vload(builder, builder.gep(sp, [builder.mul(_c(i), sstride_)]), vty, dt.itemsize)
                for i in range(L)]
        if add:  # source row i holds destination rows 0..L-1 at lane j: add vec[vbase + j] lane-wise
            vec = _vload(builder, _at(context, builder, signature.args, args, 6), vty, dt.itemsize)
            rows = [builder.fadd(r, vec) for r in rows]
        b = L // 2
        mty = ir.VectorType(_I32, L)
        while b >= 1:
            lo_mask = ir.Constant(mty, [c if c & b == 0 else L + c - b for c in range(L)])
            hi_mask = ir.Constant(mty, [c + b if c & b == 0 else L + c for c in range(L)])
            new = list(rows)
            for i in range(L):
                if i & b:
                    continue
                j = i + b
                new[i] = builder.shuffle_vector(rows[i], rows[j], lo_mask)
                new[j] = builder.shuffle_vector(rows[i], rows[j], hi_mask)
            rows = new
            b //= 2
        for j in range(L):
            ptr = builder.gep(dp, [builder.mul(_c(j), dstride_)])
            if partial:
                with builder.if_then(builder.icmp_signed("<", _c(j), args[6])):
                    _vstore(builder, rows[j], ptr, vty, dt.itemsize)
            else:
                _vstore(builder, rows[j], ptr, vty, dt.itemsize)
        return context.get_dummy_value()

    if partial:
        @intrinsic
        def kern_rows(typingctx, src, sbase, sstride, dst, dbase, dstride, rows):
            return types.void(src, sbase, sstride, dst, dbase, dstride, rows), codegen
        return kern_rows
    if add:
        @intrinsic
        def kern_add(typingctx, src, sbase, sstride, dst, dbase, dstride, vec, vbase):
            return types.void(src, sbase, sstride, dst, dbase, dstride, vec, vbase), codegen
        return kern_add

    @intrinsic
    def kern(typingctx, src, sbase, sstride, dst, dbase, dstride):
        return types.void(src, sbase, sstride, dst, dbase, dstride), codegen

    return kern


def _combine(builder, terms, vty):
    """sum_i c_i * v_i for constant coefficients, skipping zeros (+-1 as adds and subtractions)."""
    acc = None
    for c, v in terms:
        if c == 0:
            continue
        if abs(c) != 1:
            v = builder.fmul(v, ir.Constant(vty, [float(abs(c))] * vty.count))
        if acc is None:
            acc = v if c > 0 else builder.fneg(v)
        else:
            acc = builder.fadd(acc, v) if c > 0 else builder.fsub(acc, v)
    return acc if acc is not None else ir.Constant(vty, [0.0] * vty.count)


def transform2d(Lm, Rm, NV: int, add: bool = False):
    """The tile transform ``Y = Lm X Rm^T`` (constant matrices ``Lm`` (p, a), ``Rm`` (q, b)).

    Call it from Numba as ``kern(src, sbase, srow, scol, dst, dbase, drow, dcol, b)``: element
    ``(i, j)`` of the ``a x b`` input tile is the ``NV`` vectors at ``src[sbase + i*srow + j*scol:]``,
    element ``(r, s)`` of the ``p x q`` output goes to ``dst[dbase + r*drow + s*dcol:]``; with
    ``add``, the scalar ``b`` is added to every output (the bias), otherwise ``b`` is ignored.
    Rows are combined first (``Lm X``), then columns, as written.
    """
    return _transform2d(tuple(tuple(float(v) for v in row) for row in np.asarray(Lm)),
                        tuple(tuple(float(v) for v in row) for row in np.asarray(Rm)), int(NV), bool(add))


@functools.lru_cache(maxsize=None)
def _transform2d(Lm, Rm, NV: int, add: bool):
    """:func:`transform2d` for matrices given as tuples of rows (hashable: one kernel per transform)."""
    p, a = len(Lm), len(Lm[0])
    q, b = len(Rm), len(Rm[0])

    @intrinsic
    def kern(typingctx, src, sbase, srow, scol, dst, dbase, drow, dcol, bias):
        sig = types.void(src, sbase, srow, scol, dst, dbase, drow, dcol, bias)

        def codegen(context, builder, signature, args):
            src_, sbase_, srow_, scol_, dst_, dbase_, drow_, dcol_, bias_ = args
            at = signature.args
            dt, L, vty, sp, dp = _src_dst(context, builder, at, args, 4)
            bv = _splat(builder, context.cast(builder, bias_, at[8], at[0].dtype), vty) if add else None
            for v in range(NV):
                x = [[_vload(builder, builder.gep(sp, [builder.add(builder.add(builder.mul(_c(i), srow_),
                                                                             builder.mul(_c(j), scol_)), _c(v * L))]),
                             vty, dt.itemsize) for j in range(b)] for i in range(a)]
                rows = [[_combine(builder, [(Lm[r][i], x[i][j]) for i in range(a)], vty) for j in range(b)]
                        for r in range(p)]
                for r in range(p):
                    for s_ in range(q):
                        y = _combine(builder, [(Rm[s_][j], rows[r][j]) for j in range(b)], vty)
                        if add:
                            y = builder.fadd(y, bv)
                        ptr = builder.gep(dp, [builder.add(builder.add(builder.mul(_c(r), drow_),
                                                                       builder.mul(_c(s_), dcol_)), _c(v * L))])
                        _vstore(builder, y, ptr, vty, dt.itemsize)
            return context.get_dummy_value()

        return sig, codegen

    return kern
