import numpy as np
from op_check import check_op


def test_add_broadcast():
    a = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((3, 1)).astype(np.float32)
    check_op("Add", [a, b])


def test_clip_optional_inputs():
    x = np.linspace(-5, 5, 11, dtype=np.float32)
    check_op("Clip", [x, None, np.array(3, np.float32)], constant_inputs=[2])
