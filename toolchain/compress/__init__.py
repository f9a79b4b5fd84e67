"""Compression steps, each `verb(model, config) -> model`: truncate (layers), and more to come."""
