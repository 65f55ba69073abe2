"""normexp: an experiment harness for normalization research (BN, GN, LN and friends)."""

__version__ = "0.1.0"
