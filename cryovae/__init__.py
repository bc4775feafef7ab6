"""cryovae: learn in-plane pose and conformation of cryo-EM particles.

Data flows one way: files -> :mod:`cryovae.io` -> :mod:`cryovae.data` -> :mod:`cryovae.models`
-> latents -> star files / plots / napari.
"""

__version__ = "0.1.0"
