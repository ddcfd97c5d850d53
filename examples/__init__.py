"""Examples shipped with qcompiler: the demo model ``digits_convnet.onnx`` and its data.

``digits.npz`` holds scikit-learn's digits images (from the UCI "Optical Recognition of
Handwritten Digits" set, CC BY 4.0), scaled to [0, 1]: ``calib_x``/``calib_y`` (256 images) and
``test_x``/``test_y`` (541 images).
"""
