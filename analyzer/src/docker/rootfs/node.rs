//! What a path names in a container filesystem before symlinks are followed: the one question
//! every backend (`layers`, `archive`) answers, and `Rootfs` resolves paths with.

/// What a path names, before symlinks are followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    File,
    Dir,
    Symlink(String),
    Other,
    Missing,
}
