"""The small record types that flow through the pipeline, and pure functions on them.

Beam stays at the edges (see transforms/read.py etc.); everything here is plain Python so
it can be tested without a pipeline. This module is the one import for all of it: the
types, constants and score rows live in record_types.py, the parsing and validation of
input records in record_parsing.py (which imports the types, so they cannot live here).
"""
from transforms.record_parsing import has_visible_char, parse_record, unexpected
from transforms.record_types import (ASK_LLM_SCORE, CLUSTER, CLUSTER_DISTANCE,  # noqa: F401
                                     DUPLICATE_KEY,
                                     DUPLICATE_OF, EMPTY_TEXT, EXCERPT_CHARS, INPUT_FORMATS,
                                     INVALID_ID, INVALID_JSON,
                                     INVALID_RECORD, INVALID_ROW, INVALID_TEXT, INVALID_TFRECORD,
                                     INVALID_UTF8, MAX_ID_BYTES, MISSING_FILE, MISSING_INT,
                                     MISSING_TEXT_FIELD, NOT_A_REGULAR_FILE, NOT_AN_OBJECT,
                                     QUALITY_SCORE, TEXT_NOT_STRING, TOO_LARGE,
                                     UNREADABLE_FILE, Document, RawRecord, Rejected, excerpt,
                                     is_valid_unicode, safe_str, score_record, score_row,
                                     strict_json, text_id)

__all__ = [
    # Rejection reasons, limits and score names.
    "INVALID_JSON", "NOT_AN_OBJECT", "MISSING_TEXT_FIELD", "TEXT_NOT_STRING", "EMPTY_TEXT",
    "INVALID_UTF8", "TOO_LARGE", "INVALID_ID", "INVALID_TFRECORD", "UNREADABLE_FILE",
    "MISSING_FILE", "NOT_A_REGULAR_FILE", "INVALID_TEXT", "INVALID_RECORD", "INVALID_ROW", "DUPLICATE_KEY",
    "MAX_ID_BYTES", "EXCERPT_CHARS", "ASK_LLM_SCORE", "QUALITY_SCORE", "CLUSTER",
    "CLUSTER_DISTANCE", "DUPLICATE_OF", "MISSING_INT", "INPUT_FORMATS",
    # The types and plain functions on them.
    "Document", "Rejected", "RawRecord", "text_id", "is_valid_unicode", "safe_str",
    "excerpt", "score_record", "strict_json", "score_row",
    # Parsing and validation.
    "has_visible_char", "parse_record", "unexpected",
]
