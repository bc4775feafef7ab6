"""cryovae.models"""
