"""Model folders -> exported folders: ONNX graphs checked against PyTorch (:mod:`.folder`, :mod:`.onnx`,
:mod:`.networks`) and their INT8 versions (:mod:`.quantize`), for :mod:`histobreast.runtime`.

Above the pipelines (it reads model folders) and the runtime (its parity check and the final read
go through onnxruntime as the runtime does). See docs/deployment.md.
"""
