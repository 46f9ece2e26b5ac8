"""lstm-diag: gradient-flow diagnostics for LSTMs.

from lstm_diag import analyze
result = analyze("config.yaml")        # or a mapping, or None for the default
result.to_dict()                       # the JSON document of `analyze --format json`
"""

__version__ = "0.1.0"
__all__ = ["analyze", "__version__"]


def __getattr__(name):
    # Lazy, so that `lstm-diag --help` does not pay for numpy and pydantic.
    if name == "analyze":
        from .features.analysis import analyze

        return analyze
    raise AttributeError(f"module 'lstm_diag' has no attribute {name!r}")
