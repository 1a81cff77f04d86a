"""zoo: Keras functional-API builders of multi-task models (families arrive with their issues)."""
