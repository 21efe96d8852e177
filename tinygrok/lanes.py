"""Dot products added up in eight lanes, with the eight lanes in one SIMD register; and
sums of weighted rows with the output row in SIMD registers.

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
operations on the same lanes in the same order, so the same bits (a NaN result may come
out as a different NaN), about 3.7 times faster for rows of 32 when it was written (2.5
against 9.3 ns a dot product; benchmarks/README.md, "A seventh session").

A sum is a dot product with ones (x * 1 is x exactly), and a sum of squares is the dot
product of a row with itself, so LayerNorm uses ``dot`` too.

The attention kernels also add up whole rows: O[i] = sum_j P[i, j] V[j], one output row
of a matrix product. Written as a loop over j around a loop ``out[c] += weight *
row[c]``, every row j reads the output row from memory and writes it back, and each short
inner loop pays the compiler's checks around it. ``weighted_sum_of_rows`` keeps the
output row in vector registers while the rows are added, in the same order (row 0
first), so with the same bits: ``weighted_sum_in_order`` is the scalar code and
``weighted_sum_in_vector_registers`` the vector instructions.

A trap when editing this file: Numba's on-disk cache checks only the file a cached kernel
is in, so the kernels of attention.py and kernels.py that inline ``dot`` (or
``weighted_sum_of_rows``) are NOT compiled again when this file changes; they keep
running the old code. After an edit, delete Numba's cache for tinygrok (the ``*.nbi`` and
``*.nbc`` files in ``tinygrok/__pycache__``, or under ``NUMBA_CACHE_DIR`` when it is
set). tests/test_lanes.py fails on a stale LayerNorm kernel and tests/test_attention.py
on stale attention kernels, as a reminder.
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
        sums = builder.insert_element(sums, builder.load(lane0), ir.Constant(ir.IntType(32), 0))

        def add_swapped(vector, order):
            """vector + the same lanes in ``order``: lane l gets vector[l] + vector[order[l]]
            (one shuffle and one vector add, however many of the lanes are wanted)."""
            mask = ir.Constant(ir.VectorType(ir.IntType(32), 8), order)
            undefined = ir.Constant(vector_type, ir.Undefined)
            swapped = builder.shuffle_vector(vector, undefined, mask)
            return builder.fadd(vector, swapped)

        # The pairwise sums, four and then two at a time: lanes 0, 2, 4, 6 of ``pairs``
        # hold s0 + s1, s2 + s3, s4 + s5, s6 + s7 (the other four lanes go unused),
        # lanes 0 and 4 of ``halves`` (s0 + s1) + (s2 + s3) and (s4 + s5) + (s6 + s7).
        pairs = add_swapped(sums, [1, 0, 3, 2, 5, 4, 7, 6])
        halves = add_swapped(pairs, [2, 3, 0, 1, 6, 7, 4, 5])
        return builder.fadd(lane(halves, 0), lane(halves, 4))

    return x.dtype(x, y), codegen


def weighted_sum_in_order(weights, rows, count, out):
    """out[c] = sum_j weights[j] rows[j, c] over the first ``count`` rows, for every column
    c: out starts at 0 and adds the rows in order, j = 0, 1, ... (the order
    ``weighted_sum_of_rows`` computes, written as plain scalar code). This is one output
    row of a matrix product: the attention output O[i] = sum_j P[i, j] V[j], and in the
    backward the rows of dQ, dK and dV. ``out`` must not share memory with ``weights`` or
    ``rows`` (the vector version reads every row before it writes out)."""
    n = max(0, min(count, weights.shape[0], rows.shape[0]))
    d = min(rows.shape[1], out.shape[0])
    for c in range(d):
        out[c] = 0
    for j in range(n):
        weight = weights[j]
        for c in range(d):
            out[c] += weight * rows[j, c]


@intrinsic
def weighted_sum_in_vector_registers(typingctx, weights, rows, count, out):
    """``weighted_sum_in_order`` with the output row held in vector registers: the same
    bits, since every column still adds the same products in the same order.

    The scalar code (in Numba, a loop over j around a loop ``out[c] += weight * rows[j,
    c]``) reads out[c] from memory and writes it back for every row, and each short inner
    loop pays the checks the compiler adds around it (may ``out`` and ``rows`` overlap?).
    Here 32 columns at a time stay in four vector registers while all the rows are added,
    and are stored once; then blocks of 8 columns, then the last columns one by one. One
    step of the 32-column loop, for row j, in LLVM IR (float32):

        %weight = load float, weights[j]            ; then copied into all 8 lanes
        %row_k  = load <8 x float>, rows[j, c0 + 8k]    ; k = 0 .. 3
        %sum_k  = fadd %sum_k, (fmul %weight, %row_k)

    Same bits as the scalar code because fmul and fadd carry no fast-math flags: LLVM may
    neither reorder them nor fuse them into one FMA instruction (see ``dot_in_vector_lanes``
    for the builder, alloca and gep). weights and out: 1-D C-contiguous; rows: 2-D
    C-contiguous; one float dtype; count a signed integer. Like ``dot``, it reads no
    further than the shortest of count, weights and rows, and writes no further than the
    shorter of out and a row. ``out`` must not share memory with ``weights`` or ``rows``.
    """
    if not (isinstance(weights, types.Array) and isinstance(rows, types.Array)
            and isinstance(out, types.Array) and weights.ndim == out.ndim == 1
            and rows.ndim == 2 and weights.layout == rows.layout == out.layout == "C"
            and weights.dtype == rows.dtype == out.dtype and out.mutable
            and isinstance(out.dtype, types.Float)
            and isinstance(count, types.Integer) and count.signed):
        return None  # no such signature: Numba reports the types it got

    def codegen(context, builder, signature, args):
        weights_array = context.make_array(signature.args[0])(context, builder, args[0])
        rows_array = context.make_array(signature.args[1])(context, builder, args[1])
        count_value = context.cast(builder, args[2], signature.args[2], types.intp)
        out_array = context.make_array(signature.args[3])(context, builder, args[3])
        real = context.get_data_type(signature.args[3].dtype)  # float or double
        item_size = context.get_abi_sizeof(real)
        vector_type = ir.VectorType(real, 8)  # 8 float32: 256 bits; 8 float64: 512 bits
        zero_vector = ir.Constant(vector_type, None)  # None: all lanes 0

        def smaller(a, b):
            return builder.select(builder.icmp_signed("<", a, b), a, b)

        def larger(a, b):
            return builder.select(builder.icmp_signed(">", a, b), a, b)

        num_rows, row_length = cgutils.unpack_tuple(builder, rows_array.shape, 2)
        zero, one, eight, thirty_two = (ir.Constant(num_rows.type, v) for v in (0, 1, 8, 32))
        num_weights = builder.extract_value(weights_array.shape, 0)
        n = larger(zero, smaller(smaller(count_value, num_weights), num_rows))  # rows added
        d = smaller(row_length, builder.extract_value(out_array.shape, 0))  # columns
        end_of_32s = builder.sub(d, builder.srem(d, thirty_two))  # d - d % 32
        end_of_8s = builder.sub(d, builder.srem(d, eight))        # d - d % 8

        def row_pointer(j, c):  # &rows[j, c]: C-contiguous, a row is row_length long
            return builder.gep(rows_array.data, [builder.add(builder.mul(j, row_length), c)])

        def as_vector_pointer(pointer):
            return builder.bitcast(pointer, vector_type.as_pointer())

        def weight_in_every_lane(j):
            """weights[j] in all 8 lanes: insertelement puts it in lane 0, and
            shufflevector with an all-zero mask copies lane 0 everywhere (on x86 one
            broadcast instruction)."""
            weight = builder.load(builder.gep(weights_array.data, [j]), name="weight")
            in_lane_0 = builder.insert_element(ir.Constant(vector_type, ir.Undefined), weight,
                                               ir.Constant(ir.IntType(32), 0))
            all_lanes_from_lane_0 = ir.Constant(ir.VectorType(ir.IntType(32), 8), None)
            return builder.shuffle_vector(in_lane_0, ir.Constant(vector_type, ir.Undefined),
                                          all_lanes_from_lane_0)

        def add_rows_in_registers(c0, vector_count):
            """Columns c0 .. c0 + 8 vector_count - 1 of the sum: sums[k] holds columns
            c0 + 8k .. c0 + 8k + 7 while all n rows are added, then goes to out."""
            sums = [cgutils.alloca_once_value(builder, zero_vector)  # LLVM keeps these
                    for _ in range(vector_count)]                     # in registers
            with cgutils.for_range(builder, n) as loop:
                weight = weight_in_every_lane(loop.index)
                for k, total in enumerate(sums):
                    column = builder.add(c0, ir.Constant(c0.type, 8 * k))
                    row = builder.load(as_vector_pointer(row_pointer(loop.index, column)),
                                       align=item_size, name="row")  # unaligned load
                    added = builder.fadd(builder.load(total), builder.fmul(weight, row),
                                         name="sum")
                    builder.store(added, total)
            for k, total in enumerate(sums):
                column = builder.add(c0, ir.Constant(c0.type, 8 * k))
                target = as_vector_pointer(builder.gep(out_array.data, [column]))
                builder.store(builder.load(total), target, align=item_size)  # unaligned

        with cgutils.for_range_slice(builder, zero, end_of_32s, thirty_two) as (c0, _):
            add_rows_in_registers(c0, 4)
        with cgutils.for_range_slice(builder, end_of_32s, end_of_8s, eight) as (c0, _):
            add_rows_in_registers(c0, 1)
        with cgutils.for_range_slice(builder, end_of_8s, d, one) as (c, _):  # leftovers
            total = cgutils.alloca_once_value(builder, ir.Constant(real, 0.0))
            with cgutils.for_range(builder, n) as loop:
                weight = builder.load(builder.gep(weights_array.data, [loop.index]))
                product = builder.fmul(weight, builder.load(row_pointer(loop.index, c)))
                builder.store(builder.fadd(builder.load(total), product), total)
            builder.store(builder.load(total), builder.gep(out_array.data, [c]))
        return context.get_dummy_value()

    return types.void(weights, rows, count, out), codegen


@njit(cache=True, inline="always")
def weighted_sum_of_rows(weights, rows, count, out):
    """out[c] = sum_j weights[j] rows[j, c] over the first ``count`` rows, added in row
    order from 0 (``weighted_sum_in_order``'s numbers), with the output row in registers.
    weights, out: 1-D and rows: 2-D, C-contiguous, one float dtype."""
    weighted_sum_in_vector_registers(weights, rows, count, out)


@njit(cache=True, inline="always")
def dot(x, y):
    """sum_c x[c] y[c] for 1-D C-contiguous x and y, in eight lanes (``dot_in_lanes``'s
    order and numbers), by vector instructions. Like ``zip``, it stops at the end of the
    shorter vector. (It raises nothing: an exception that can leave a ``prange`` loop
    makes Numba run that loop on one thread.)"""
    return dot_in_vector_lanes(x, y)


if numba.config.DISABLE_JIT:  # kernels running as plain Python (to step through them)
    dot = dot_in_lanes  # noqa: F811
    weighted_sum_of_rows = weighted_sum_in_order  # noqa: F811
