"""Figures of analyze (analysis.py), compare (compare.py) and train (train.py), in the one
style of style.py. Renderers take a document and return matplotlib Figures; the commands
encode them (`style.figure_bytes`) and write the files."""
