"""Export formats: each config in `conf/export/` names a `Format` here (exporter, loader, int8 route)."""
