"""Torch datasets over records, between pre-processing and the models (docs/ARCHITECTURE.md).

- :mod:`.images`: whole images, System A's hybrid input (global image + grid) and single grid patches;
- :mod:`.key_regions`: System B's six views x KREM key regions x crop stacks;
- :mod:`.spanhol_patches`: the Spanhol 2016 baseline's patches;
- :mod:`.augmenter`: the training augmentation of an ``AugmentConfig`` that they share.

``dataset[i] -> (inputs, target)`` (torchvision's convention); every random choice is seeded by
``(seed, epoch, index)``. Submodules are imported explicitly, so using one does not load the others.
"""
