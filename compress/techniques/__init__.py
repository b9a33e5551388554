"""Compression techniques. The catalogue is `conf/technique/`: each file lists the steps (classes here)."""
