//! k6 threshold expressions: parsing and evaluation.
