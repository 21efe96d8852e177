"""exp() for the softmax: many float32 numbers at once, sixteen lanes per vector step
(one AVX-512 instruction, two on AVX2).

The attention forward takes exp() of every visible score. Numba compiles ``math.exp``
into one call of the C library's ``expf`` per number, which the compiler cannot turn into
vector instructions; at T = 128 those calls took a fifth of the forward's time.
``exp_each`` computes sixteen float32 at a time with plain arithmetic instead, about four
times as fast over a long array (benchmarks/README.md, "A ninth session"). That made the
attention kernels 0.91 of their time at T = 128 and 0.92-0.97 at T = 4; inside a whole
training step, where attention is a small part, it changed nothing measurable (0.996).

The maths
---------
Write x = k ln 2 + r, with k a whole number and |r| <= (ln 2) / 2 = 0.347 (k is rounded from
x * log2(e) in float32, so |r| can pass that by 3e-6, which changes no bound below). Then

    e^x = 2^k e^r

- k = round(x / ln 2), to nearest. Adding SHIFTER = 1.5 * 2^23 does the rounding: float32
  keeps no fractions at that size, so x / ln 2 + SHIFTER is SHIFTER + k, exactly;
- r = x - k ln 2, in two steps, k LN2_HIGH and then k LN2_LOW (Cody and Waite): LN2_HIGH
  holds only ln 2's first 15 bits, so k LN2_HIGH is exact and x - k LN2_HIGH loses
  nothing; only the tiny k LN2_LOW is rounded;
- e^r is its Taylor series up to r^7, by Horner's rule. The first term left out,
  r^8 / 8!, is at most 7.3e-9 of the sum, below float32's resolution (6e-8);
- 2^k is written directly as a float32's bits: exponent field k + 127, mantissa 0. The
  bits of SHIFTER + k, read as an integer, are SHIFTER's bits plus k, so the exponent
  field is those bits + EXPONENT_OFFSET, shifted 23 places up: integer steps only.

The range. The softmax needs x <= 0 only (a score minus its row's largest). Below LOWEST
= ln(FLT_MIN) = -87.34 the answer is under float32's smallest normal number, 1.2e-38:
``exp_each`` returns exactly 0 there (the C library returns subnormal numbers down to
-103.9). A probability that small is 0 to every sum it enters. NaN stays NaN. Above 0 it
is still e^x up to x = 88; beyond that it returns e^88 (the softmax never asks).

Accuracy: every float32 x in [LOWEST, 0] gives e^x within one unit in the last place of
the exactly rounded value, and exactly the rounded value for 99.16% of them (an exhaustive
check, benchmarks/README.md); the tests check a sample. The C library's ``expf`` is
exactly rounded for 99.99% of them. So about one exp() in a hundred differs from what the
C library gave, by one unit in the last place, and through the row sums a few percent of
a softmax's probabilities move by one to three units.

``exp_each_in_order`` is the arithmetic one number at a time in NumPy float32, and
``exp_each_in_vector_lanes`` the same operations as vector instructions (LLVM IR, written
as in lanes.py): the same bits (a test checks). float64 keeps the C library's exp, one
number at a time (it serves the gradient checks, where speed does not matter; in the
scalar code ``math.exp`` raises OverflowError above 709.78, where the compiled code gives
inf, a range the softmax never reaches).

The trap of lanes.py applies here too: Numba's cache does not notice an edit of this
file in the attention kernels that inline ``exp_each``. After one, delete the ``*.nbi``
and ``*.nbc`` files in ``tinygrok/__pycache__``.
"""

import math

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

LOWEST = np.float32(-87.33654)   # ln(FLT_MIN): below it, exp_each returns 0
HIGHEST = np.float32(88.0)       # x is clamped here: 2^k stays a float32 (k <= 127)
LOG2_E = np.float32(1.442695)    # 1 / ln 2
LN2_HIGH = np.float32(0.693145751953125)     # ln 2 to 15 bits: k LN2_HIGH is exact
LN2_LOW = np.float32(1.428606765330187e-06)  # ln 2 - LN2_HIGH
SHIFTER = np.float32(1.5 * 2 ** 23)  # x / ln 2 + SHIFTER = SHIFTER + round(x / ln 2)
EXPONENT_OFFSET = 127 - int(np.array(SHIFTER).view(np.int32))  # bits of SHIFTER + k -> k + 127
# 1/7!, 1/6!, ..., 1/1!, 1/0!: Horner's rule starts with the highest power.
TAYLOR = tuple(np.float32(1 / math.factorial(n)) for n in range(7, -1, -1))


def exp_each_in_order(values, count):
    """values[:count] = e^values[:count] in place, one number at a time: for float32 the
    arithmetic of the module docstring in NumPy float32 (every step rounds to float32, as
    the vector instructions do); for float64 ``math.exp``."""
    for e in range(max(0, min(count, values.shape[0]))):
        if values.dtype == np.float64:
            values[e] = math.exp(values[e])
            continue
        x = np.float32(values[e])
        clamped = min(x, HIGHEST) if x >= LOWEST else LOWEST  # (NaN: LOWEST, as maxnum)
        shifted = clamped * LOG2_E + SHIFTER  # SHIFTER + k
        k = shifted - SHIFTER
        r = (clamped - k * LN2_HIGH) - k * LN2_LOW
        series = TAYLOR[0]
        for coefficient in TAYLOR[1:]:
            series = series * r + coefficient
        exponent_field = int(np.array(shifted).view(np.int32)) + EXPONENT_OFFSET  # k + 127
        power_of_two = np.array(exponent_field << 23, dtype=np.int32).view(np.float32)
        result = series * power_of_two
        if x < LOWEST:
            result = np.float32(0)
        if x != x:  # NaN
            result = x
        values[e] = result


@intrinsic
def exp_each_in_vector_lanes(typingctx, values, count):
    """``exp_each_in_order`` as vector instructions: float32 sixteen lanes at a time; for
    float64 a call of the C library's exp per number (what ``math.exp`` compiles to).

    The last vector may be partial: it is loaded and stored with a mask (on x86 with
    AVX-512, one masked instruction each), so nothing at or past ``count`` or the
    array's end is read or written. Every float32 step is one IEEE operation per lane with
    no fast-math flags (no reordering, no fused multiply-add), so the bits are the scalar
    code's. ``llvm.maxnum`` returns the other operand when one is NaN, like the scalar
    code's clamp. values: 1-D C-contiguous float array; count: an integer.
    """
    if not (isinstance(values, types.Array) and values.ndim == 1 and values.layout == "C"
            and values.mutable and values.dtype in (types.float32, types.float64)
            and isinstance(count, types.Integer)):
        return None  # no such signature: Numba reports the types it got

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        count_value = context.cast(builder, args[1], signature.args[1], types.intp)
        length = builder.extract_value(array.shape, 0)
        index_type = length.type
        zero = ir.Constant(index_type, 0)
        n = builder.select(builder.icmp_signed("<", count_value, length), count_value, length)
        n = builder.select(builder.icmp_signed(">", n, zero), n, zero)  # 0 <= n <= length
        module = builder.module

        def function(name, result, *arguments):
            return cgutils.get_or_insert_function(module, ir.FunctionType(result, arguments),
                                                  name)

        if signature.args[0].dtype == types.float64:
            exp = function("llvm.exp.f64", ir.DoubleType(), ir.DoubleType())
            with cgutils.for_range(builder, n) as loop:
                pointer = builder.gep(array.data, [loop.index])
                builder.store(builder.call(exp, [builder.load(pointer)]), pointer)
            return context.get_dummy_value()

        lanes = 16
        int32 = ir.IntType(32)
        vector = ir.VectorType(ir.FloatType(), lanes)
        int_vector = ir.VectorType(int32, lanes)
        index_vector = ir.VectorType(index_type, lanes)
        mask = ir.VectorType(ir.IntType(1), lanes)
        masked_load = function("llvm.masked.load.v16f32.p0", vector, vector.as_pointer(),
                               int32, mask, vector)
        masked_store = function("llvm.masked.store.v16f32.p0", ir.VoidType(), vector,
                                vector.as_pointer(), int32, mask)
        maxnum = function("llvm.maxnum.v16f32", vector, vector, vector)
        minnum = function("llvm.minnum.v16f32", vector, vector, vector)

        def every_lane(number, vector_type=vector):
            return ir.Constant(vector_type, [ir.Constant(vector_type.element, number)] * lanes)

        def in_every_lane(scalar):  # insertelement into lane 0, then copy lane 0 everywhere
            lane_0 = builder.insert_element(ir.Constant(index_vector, ir.Undefined), scalar,
                                            ir.Constant(int32, 0))
            return builder.shuffle_vector(lane_0, ir.Constant(index_vector, ir.Undefined),
                                          ir.Constant(int_vector, [0] * lanes))

        lane_numbers = ir.Constant(index_vector, list(range(lanes)))
        all_n = in_every_lane(n)
        alignment = ir.Constant(int32, 4)  # a float32's: any element may start a vector
        with cgutils.for_range_slice(builder, zero, n, ir.Constant(index_type, lanes)) \
                as (e, _):
            # Lanes e .. e + 15, switched on where e + lane < n.
            on = builder.icmp_signed("<", builder.add(in_every_lane(e), lane_numbers), all_n)
            pointer = builder.bitcast(builder.gep(array.data, [e]), vector.as_pointer())
            x = builder.call(masked_load, [pointer, alignment, on, every_lane(0.0)])
            clamped = builder.call(minnum, [builder.call(maxnum, [x, every_lane(float(LOWEST))]),
                                            every_lane(float(HIGHEST))])
            shifted = builder.fadd(builder.fmul(clamped, every_lane(float(LOG2_E))),
                                   every_lane(float(SHIFTER)))
            k = builder.fsub(shifted, every_lane(float(SHIFTER)))
            r = builder.fsub(builder.fsub(clamped, builder.fmul(k, every_lane(float(LN2_HIGH)))),
                             builder.fmul(k, every_lane(float(LN2_LOW))))
            series = every_lane(float(TAYLOR[0]))
            for coefficient in TAYLOR[1:]:
                series = builder.fadd(builder.fmul(series, r), every_lane(float(coefficient)))
            exponent_field = builder.add(builder.bitcast(shifted, int_vector),
                                         every_lane(EXPONENT_OFFSET, int_vector))
            power_of_two = builder.bitcast(
                builder.shl(exponent_field, every_lane(23, int_vector)), vector)
            result = builder.fmul(series, power_of_two)
            below = builder.fcmp_ordered("<", x, every_lane(float(LOWEST)))
            result = builder.select(below, every_lane(0.0), result)
            result = builder.select(builder.fcmp_unordered("uno", x, x), x, result)  # NaN
            builder.call(masked_store, [result, pointer, alignment, on])
        return context.get_dummy_value()

    return types.void(values, count), codegen


@njit(cache=True, inline="always")
def exp_each(values, count):
    """values[:count] = e^values[:count] in place (module docstring): float32 sixteen at a
    time, float64 by the C library. values: a 1-D C-contiguous float array."""
    exp_each_in_vector_lanes(values, count)


if numba.config.DISABLE_JIT:  # kernels running as plain Python (to step through them)
    exp_each = exp_each_in_order  # noqa: F811
