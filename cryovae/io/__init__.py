"""cryovae.io"""
