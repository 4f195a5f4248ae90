"""Pre-processing between records and models (docs/preprocess.md).

- :mod:`.stain`: Reinhard and Macenko stain normalisation, with identity fallback on blank patches;
- :mod:`.augment`: System A's random rotation / flip / shear (one affine warp, reflected borders);
- :mod:`.patches`: System A's 5x3 grid, Spanhol 2016's sliding-window and random patches;
- :mod:`.views`: System B's six views;
- :mod:`.krem`: System B's nuclei-density key regions (KREM);
- :mod:`.key_region_samples`: System B's per-view key regions, their crops and the sample index (numpy);
- :mod:`.transforms`: uint8 arrays -> ImageNet-normalised tensors;
- :mod:`.cache`: content- and parameter-keyed on-disk cache of pre-processed arrays.

Images are ``(H, W, 3)`` uint8 RGB numpy arrays throughout, and pixel sizes from the papers are
scaled with the image's µm/px. Submodules are imported explicitly (``from
histobreast.preprocess.krem import key_regions``), so using one does not load the others (KREM,
stain and the cache need no torch).
"""
