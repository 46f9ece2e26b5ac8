"""Renderers over plain results: rich tables, JSON, markdown, HTML (and figures, in figures/).
They format; they never compute a diagnostic."""
