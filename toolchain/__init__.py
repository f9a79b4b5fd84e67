"""Toolformer: fine-tune, compress, export and prove BERT-family encoders for the edge."""

__version__ = "0.1.0"
