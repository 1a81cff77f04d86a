"""training: training loops, recipes and the `mtl-tf` command line."""
