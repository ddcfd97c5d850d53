"""Test configuration: hypothesis profiles (thorough locally, bounded under CI=true)."""

from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, settings

settings.register_profile(
    "thorough", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci", max_examples=30, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else
                                     "thorough"))

# The LLVM backend's compiled-code cache: one fresh directory per test session, never the
# user's (tests that check the cache itself point it elsewhere).
os.environ.setdefault("QCOMPILER_CACHE_DIR", tempfile.mkdtemp(prefix="qcompiler-cache-"))
