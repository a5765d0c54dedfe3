"""Review pages for the people who read the scans: confirm mined or detected lesions in a
browser, then turn the verdicts back into labels (``uld review``, ``uld review apply``)."""

from uld.review.apply import apply_verdicts, read_verdicts
from uld.review.build import build_review, review_id

__all__ = ["apply_verdicts", "build_review", "read_verdicts", "review_id"]
