"""The LLVM backend's emitters, one module per family of ops; the runtime imports every module
here, and each registers its emitters with ``kernel.emitter`` (see ``kernel.py``)."""
