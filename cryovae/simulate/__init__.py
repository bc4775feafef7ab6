"""cryovae.simulate"""
