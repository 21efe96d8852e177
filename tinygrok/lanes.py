"""Dot products added up in eight lanes, with the eight lanes in one SIMD register.

The attention kernels (S = Q K^T, dP = dO V^T) and LayerNorm (a row's mean and variance)
spend much of their time in sums of products. Two rules shape how they are added up:

- No fastmath (gradient checks run through these kernels; docs/internals.md, "The
  attention kernel"). The compiler may then never reorder additions, so a plain
  ``total += x[c] * y[c]`` stays one chain of additions, each waiting for the one before
  (about 4 cycles apiece).
- A fixed order: the same numbers on every call, thread and machine with the same
  instructions, independent of how the compiler feels that day.

So a sum keeps eight running sums, lane l adding the products of c = l, l + 8, l + 16, ...
(those beyond the last multiple of 8 go to lane 0), and adds the lanes pairwise at the end
(``dot_in_lanes``, the order written as plain scalar code). That order rounds differently
from a left-to-right sum, within float rounding, but it is fixed by the code.

Eight independent sums are also exactly what one SIMD register holds (8 float32 in 256
bits; 8 float64 take 512 bits, two registers without AVX-512). The compiler would pack
them into one only with LLVM's SLP vectorizer, which Numba leaves off (it miscompiled
code: numba/numba#8852). ``dot_in_vector_lanes`` therefore writes those vector
instructions itself, as LLVM IR, the way Numba writes its own built-ins: the same
operations on the same lanes in the same order, so the same bits, about 3.7 times faster
for rows of 32 (2.5 against 9.3 ns a dot product).

A sum is a dot product with ones (x * 1 is x exactly), and a sum of squares is the dot
product of a row with itself, so LayerNorm uses ``dot`` too.

A trap when editing this file: Numba's on-disk cache checks only the file a cached kernel
is in, so the kernels of attention.py and kernels.py that inline ``dot`` are NOT compiled
again when this file changes; they keep running the old code. After an edit, delete
Numba's cache for tinygrok (the ``*.nbi`` and ``*.nbc`` files in ``tinygrok/__pycache__``,
or under ``NUMBA_CACHE_DIR`` when it is set). tests/test_lanes.py fails on a stale
LayerNorm kernel, as a reminder.
"""

import numba
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic


def dot_in_lanes(x, y):
    """sum_c x[c] y[c] for 1-D x and y, added up in eight lanes (module docstring): the
    order ``dot`` computes, written as plain scalar code. Like ``zip``, it stops at the
    end of the shorter vector."""
    n = min(x.shape[0], y.shape[0])
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = x.dtype.type(0)
    blocks = n - n % 8
    for c in range(0, blocks, 8):
        s0 += x[c] * y[c]
        s1 += x[c + 1] * y[c + 1]
        s2 += x[c + 2] * y[c + 2]
        s3 += x[c + 3] * y[c + 3]
        s4 += x[c + 4] * y[c + 4]
        s5 += x[c + 5] * y[c + 5]
        s6 += x[c + 6] * y[c + 6]
        s7 += x[c + 7] * y[c + 7]
    for c in range(blocks, n):
        s0 += x[c] * y[c]
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@intrinsic
def dot_in_vector_lanes(typingctx, x, y):
    """``dot_in_lanes`` with s0 .. s7 side by side in one vector: the same bits.

    Each block of eight (c = 8m .. 8m + 7) is one vector load of x, one of y, one vector
    multiply and one vector add into the eight lane sums: exactly the scalar code's
    operations on s0 .. s7, done side by side. Then the leftovers go into lane 0 one by
    one, and the lanes are added pairwise, as there. ``codegen`` emits this code wherever
    a kernel calls it. x and y: 1-D C-contiguous arrays of one float dtype; like ``zip``,
    it stops at the end of the shorter one (so it never reads past either).

    Same bits, because the instructions carry no fast-math flags: LLVM may then neither
    reorder the additions nor fuse a multiply and an add into one FMA instruction (which
    rounds once instead of twice). On x86 this compiles to vmulps and vaddps.
    """
    if not (isinstance(x, types.Array) and isinstance(y, types.Array) and x.ndim == y.ndim == 1
            and x.layout == y.layout == "C" and x.dtype == y.dtype
            and isinstance(x.dtype, types.Float)):
        return None  # no such signature: Numba reports the types it got

    def codegen(context, builder, signature, args):
        # ``builder`` appends LLVM instructions to the kernel being compiled. alloca is a
        # variable in the function's frame, store writes it and load reads it (LLVM keeps
        # such variables in registers); gep is pointer arithmetic, array.data + c.
        x_array = context.make_array(signature.args[0])(context, builder, args[0])
        y_array = context.make_array(signature.args[1])(context, builder, args[1])
        real = context.get_data_type(signature.return_type)  # float or double
        item_size = context.get_abi_sizeof(real)
        vector_type = ir.VectorType(real, 8)  # 8 float32: 256 bits; 8 float64: 512 bits
        x_length = builder.extract_value(x_array.shape, 0)
        y_length = builder.extract_value(y_array.shape, 0)
        n = builder.select(builder.icmp_signed("<", x_length, y_length), x_length, y_length)
        zero, one, eight = (ir.Constant(n.type, value) for value in (0, 1, 8))
        blocks = builder.sub(n, builder.srem(n, eight))  # n - n % 8 (n >= 0: a shape)

        def load_eight(array, c):  # array[c .. c + 7] as one vector
            pointer = builder.bitcast(builder.gep(array.data, [c]), vector_type.as_pointer())
            return builder.load(pointer, align=item_size)  # any offset: unaligned load

        def lane(vector, number):
            return builder.extract_element(vector, ir.Constant(ir.IntType(32), number))

        sums_variable = cgutils.alloca_once_value(builder, ir.Constant(vector_type, None))
        with cgutils.for_range_slice(builder, zero, blocks, eight) as (c, _):  # c += 8
            products = builder.fmul(load_eight(x_array, c), load_eight(y_array, c))
            builder.store(builder.fadd(builder.load(sums_variable), products), sums_variable)
        sums = builder.load(sums_variable)  # s0 .. s7
        lane0 = cgutils.alloca_once_value(builder, lane(sums, 0))
        with cgutils.for_range_slice(builder, blocks, n, one) as (c, _):  # leftovers: lane 0
            product = builder.fmul(builder.load(builder.gep(x_array.data, [c])),
                                   builder.load(builder.gep(y_array.data, [c])))
            builder.store(builder.fadd(builder.load(lane0), product), lane0)
        s = [builder.load(lane0)] + [lane(sums, number) for number in range(1, 8)]
        first_half = builder.fadd(builder.fadd(s[0], s[1]), builder.fadd(s[2], s[3]))
        second_half = builder.fadd(builder.fadd(s[4], s[5]), builder.fadd(s[6], s[7]))
        return builder.fadd(first_half, second_half)

    return x.dtype(x, y), codegen


@njit(cache=True, inline="always")
def dot(x, y):
    """sum_c x[c] y[c] for 1-D C-contiguous x and y, in eight lanes (``dot_in_lanes``'s
    order and numbers), by vector instructions. Like ``zip``, it stops at the end of the
    shorter vector. (It raises nothing: an exception that can leave a ``prange`` loop
    makes Numba run that loop on one thread.)"""
    return dot_in_vector_lanes(x, y)


if numba.config.DISABLE_JIT:  # kernels running as plain Python (to step through them)
    dot = dot_in_lanes  # noqa: F811
