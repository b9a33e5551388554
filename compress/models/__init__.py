"""The model zoo: each config in `conf/model/` names a constructor here taking (input_shape, num_classes)."""
