//! The simulated carrier of `shipwatch demo` and the pipeline tests.
