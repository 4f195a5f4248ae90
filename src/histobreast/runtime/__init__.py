"""The torch-free runtime: exported folders (ONNX + ``export.json``) applied through onnxruntime.

Imports numpy, pillow, OpenCV, PyYAML, onnxruntime and histobreast's torch-free modules only
(``data``, ``preprocess``, ``predictions``, ``vote_rules``, ``pipelines.input_range``);
``tests/test_runtime.py`` runs it in a fresh interpreter and fails if ``torch`` loads. Entry points:
``python -m histobreast.runtime predict ...``, the ``histobreast-runtime`` script, and
``histobreast predict EXPORTED_DIR ...`` in the full install. See docs/deployment.md.
"""
