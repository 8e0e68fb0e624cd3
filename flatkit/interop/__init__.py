"""Models from outside flatkit: diffusers ``UNet2DModel`` directories and any torch model through a factory.

- :mod:`flatkit.interop.diffusers`: ``flatkit.load(DIR)`` on a ``save_pretrained`` directory (optional
  ``diffusers`` extra).
- :mod:`flatkit.interop.custom`: ``--model module:factory [--weights FILE]`` and :class:`flatkit.Task`.
"""
