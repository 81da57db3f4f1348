"""Thin live-inference runner for exported bundles: numpy and the standard library only.

This package is copied verbatim into every bundle (as `BUNDLE/jaxtrade_live/`), so it uses
relative imports only and must never import jax, flax, polars or pandas.
"""
