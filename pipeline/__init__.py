"""featcache: extract once with a frozen backbone, fit heads on the cached vectors.

Importing the package changes nothing in the importing process (no import hooks, no file
descriptors touched). The CLI keeps TensorFlow's start-up chatter off the terminal itself
(`pipeline.quiet_startup`), for its own process and every worker process it starts.
"""

# The package version (pyproject.toml reads it; CHANGELOG.md says what changed in each).
__version__ = "0.1.0"
