"""cryovae.training"""
