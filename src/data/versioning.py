"""Old name of :mod:`src.data.version_builder` (building a version), kept while a few modules still import it.

New code imports :mod:`src.data.version_builder`; ``tests/test_data_version_names.py`` lists who may still
use this name, and this file goes once that list is empty.
"""

import sys

from src.data import version_builder

sys.modules[__name__] = version_builder  # one module object: a patch through either name patches both
