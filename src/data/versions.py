"""Old name of :mod:`src.data.version_store` (the stored versions), kept while a few modules still import it.

New code imports :mod:`src.data.version_store`; ``tests/test_data_version_names.py`` lists who may still
use this name, and this file goes once that list is empty.
"""

import sys

from src.data import version_store

sys.modules[__name__] = version_store  # one module object: a patch through either name patches both
