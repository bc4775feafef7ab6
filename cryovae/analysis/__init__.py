"""cryovae.analysis"""
