"""The torch-free runtime: exported folders (ONNX + ``export.json``) applied through onnxruntime.

Imports numpy, pillow, OpenCV, PyYAML, onnxruntime and histobreast's torch-free modules only
(``data``, ``preprocess``, ``predictions``, ``vote_rules``, the pipelines' torch-free modules:
``input_range``, ``image_predictions``, ``tile_model``, ``slide_predict``; ``slides`` and
``report`` for slides and reviews);
``tests/test_runtime.py`` runs it in a fresh interpreter and fails if ``torch`` loads. Entry points:
``python -m histobreast.runtime predict|slide ...``, the ``histobreast-runtime`` script, and
``histobreast predict EXPORTED_DIR ...`` / ``histobreast slide predict --model EXPORTED_DIR`` in the full install. See docs/deployment.md.
"""
