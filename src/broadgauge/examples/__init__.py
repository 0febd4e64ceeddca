"""Small runnable examples that teach the concepts, one layer at a time."""
