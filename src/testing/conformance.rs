//! The storage-adapter conformance suite.
