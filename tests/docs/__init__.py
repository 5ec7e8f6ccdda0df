"""The documentation as tests: every code block of README.md and docs/ runs, and the tutorial
is followed step by step in a fresh virtual environment."""
