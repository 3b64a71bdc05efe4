"""The training engine: models, methods, data, the Trainer-based runner, its callback and export.

Import the submodules you need; this package imports nothing heavy itself (never torch or the UI at import).
"""
