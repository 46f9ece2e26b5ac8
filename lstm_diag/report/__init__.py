"""Renderers over plain results: rich tables, JSON, markdown (and plots, in plots.py).
They format; they never compute a diagnostic."""
