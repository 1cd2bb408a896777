//! The web service on its own (whole-stack page tests are `tests/web` and
//! `tests/browser` of the workspace, which need the `zocalo` binary).

mod unavailable;
