"""cryovae.data"""
