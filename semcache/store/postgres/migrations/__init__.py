"""Numbered SQL migrations of the PostgreSQL engine (templates: see ../schema.py)."""
