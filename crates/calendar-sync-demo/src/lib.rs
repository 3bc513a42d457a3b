//! The self-contained demo (work in progress).
