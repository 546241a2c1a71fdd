"""End-to-end runs on the built-in suites: the demo, its ablations, and the Composer benchmark."""
