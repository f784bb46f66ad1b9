"""featcache: extract once with a frozen backbone, fit heads on the cached vectors.

Importing the package keeps TensorFlow's start-up chatter off the terminal in this process and
in every worker process that imports it (see `pipeline.quiet_startup`).
"""

from pipeline import quiet_startup as _quiet_startup

_quiet_startup.install()
