"""Defaults shared by layers that must not import each other's dependencies.

The config schema reads the split fractions here rather than from jaxtrade.data, whose
package import loads polars: `jaxtrade train` reports a config typo before that.
"""

# Chronological train / validation / test fractions (the rest is test): one default for
# jaxtrade.data.make_splits, jaxtrade.market.build and the CLI.
TRAIN_FRAC = 0.7
VALIDATION_FRAC = 0.15
