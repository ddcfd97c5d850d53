"""The LLVM backend (being built): integer kernels emitted as LLVM IR, compiled through
llvmlite for the host CPU (features read at run time) and checked bit for bit against the numpy
backend, whose kernels define the numerics.

In so far: ``target`` (the CPU to compile for, -O3 with the loop and SLP vectorizers, a JIT)
and ``requantize`` (the int32-to-int8 rescale every integer kernel ends with). It does not
register a backend yet: ``qc.compile(..., backend="llvm")`` comes with the model runtime.
"""
