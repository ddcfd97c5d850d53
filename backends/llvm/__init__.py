"""The LLVM backend (being built): integer kernels emitted as LLVM IR, compiled through
llvmlite for the host CPU (features read at run time) and checked bit for bit against the numpy
backend, whose kernels define the numerics.

In so far, each with its tests (tests/test_llvm_*.py) on this CPU and on baseline x86-64:
``target`` (the CPU to compile for, -O3 with the loop and SLP vectorizers, a JIT), ``gemm``
(the exact int8 matrix product: 16-bit pair products with ``pmaddwd``, int32 accumulators, a
4 x 16 register tile, weights centred and packed once), ``requantize`` (the int32-to-int8
rescale every integer kernel ends with, both roundings), ``lookup`` (``LookupTable``) and
``memory`` (the arena plan from value lifetimes). It does not register a backend yet:
``qc.compile(..., backend="llvm")`` comes with the model runtime that schedules these kernels
over one arena.
"""
