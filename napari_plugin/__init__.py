"""napari plugin for cryovae: reader, latent explorer, sample data (npe2 manifest napari.yaml)."""
