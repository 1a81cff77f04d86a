"""tuning: keras-tuner search jobs over zoo models (arrive with their issue)."""
