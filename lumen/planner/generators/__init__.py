"""Random instance families of the planner's problems, for tests, benchmarks and reports."""
