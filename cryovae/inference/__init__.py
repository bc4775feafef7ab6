"""cryovae.inference"""
