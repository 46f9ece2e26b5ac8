"""Core math: pure NumPy, no file I/O, no config, no rendering, no click.

engine (forward, loss, BPTT), diagnostics (statistics and verdicts over gradients),
dynamics (state Jacobians, Lyapunov spectrum), clipping, optim, schemes (init
schemes), tasks (synthetic data tasks)."""
