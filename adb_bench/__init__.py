"""Everything that happens on a device: it benchmarks files (never imports `compress`)."""
