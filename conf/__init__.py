"""Hydra config groups (the registry of models, data sets, techniques, devices, ...). A package so that the
installed `pocketbench` script finds them (`pkg://conf`), as `python cli.py` does beside this folder."""
