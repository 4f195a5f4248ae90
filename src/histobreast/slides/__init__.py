"""Whole-slide images: reading (openslide, tiffslide, wsidicom), tissue detection, physical-scale tiling,
annotations (ImageScope XML, ASAP XML, QuPath GeoJSON), heatmaps and synthetic pyramidal slides.

This stage sits beside :mod:`histobreast.data` and below the pipelines: it imports nothing above
``data``. Model application lives in :mod:`histobreast.pipelines.slide_predict`.
"""
