"""The labeling loop: pool images whose labels would help most, labels back into the dataset, and
labeled images whose folder is probably wrong. The command line is ``src/labeling.py``.

    suggest → a person (or pseudo-labels) fills a ``label`` column → apply → retrain
"""

from src.curation.apply import apply_labels
from src.curation.issues import find_issues
from src.curation.suggest import STRATEGIES, suggest

__all__ = ["apply_labels", "find_issues", "suggest", "STRATEGIES"]
