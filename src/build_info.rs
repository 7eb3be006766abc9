//! What this binary is: version, git commit and build flavour, stamped by `build.rs`.

/// The crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit the binary was built from (`unknown` outside a checkout).
pub const COMMIT: &str = env!("OUTRIGGER_GIT_COMMIT");
/// `plain` or `pgo` (a profile-guided build, as `docker/pgo-build.sh` makes).
pub const FLAVOUR: &str = env!("OUTRIGGER_BUILD_FLAVOUR");
/// `static` (the image's binary, no C library needed at run time) or `dynamic`.
pub const LINKAGE: &str = env!("OUTRIGGER_LINKAGE");

/// `--version`'s text after the program name.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("OUTRIGGER_GIT_COMMIT"),
    ", ",
    env!("OUTRIGGER_BUILD_FLAVOUR"),
    ", ",
    env!("OUTRIGGER_LINKAGE"),
    ")"
);
