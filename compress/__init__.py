"""Everything that happens to the model: zoo, data, training, techniques, export, metrics."""
