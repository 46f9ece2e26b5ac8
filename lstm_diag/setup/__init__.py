"""From what the user gives to what the core computes on: the config (config.py),
weights and data files in the engine's layout (weights.py, datafile.py), the problem
(problem.py: config -> spec, parameters, data) and atomic output files (outputs.py)."""
