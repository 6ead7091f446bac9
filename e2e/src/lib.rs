//! Harness that starts the real components Larder's end-to-end tests run against.
