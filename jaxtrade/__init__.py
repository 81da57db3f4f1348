"""jaxtrade: a JAX-native research stack for reinforcement-learning trading."""

__version__ = "0.1.0"
