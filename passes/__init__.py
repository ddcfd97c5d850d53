"""Pass families over the IR, installed as ``qcompiler.passes``."""
