//! What `LD_PRELOAD` and `/etc/ld.so.preload` can carry, and the entries of an `LD_PRELOAD`: the
//! loader splits both on spaces and colons (and the file on any whitespace), so a path holding
//! one of them names other files, and the program then runs without the library, with only the
//! loader's error line to say so.

/// The library's file name, as `LD_PRELOAD` names it.
pub const LIBRARY_NAME: &str = "libkeepalive_shim.so";

/// The first character of `path` that the loader would split it on, if any.
pub fn unfit_char(path: &str) -> Option<char> {
    path.chars()
        .find(|c| matches!(c, ' ' | ':' | '\t' | '\n' | '\r' | '\x0b' | '\x0c'))
}

/// How to name that character in a message.
pub fn char_name(c: char) -> &'static str {
    match c {
        ' ' => "a space",
        ':' => "a colon",
        '\t' => "a tab",
        '\n' | '\r' => "a line break",
        _ => "a whitespace character",
    }
}

/// The entries of an `LD_PRELOAD` value, in order, as the loaders split it (glibc on spaces and
/// colons, musl on whitespace and colons; tabs and line breaks are taken as separators too), the
/// empty ones left out. Whether an entry is this library is a question of the file it names
/// (device and inode), not of its name: the library asks it (`src/preloaded.rs`).
pub fn entries(ld_preload: &[u8]) -> impl Iterator<Item = &[u8]> {
    ld_preload
        .split(|b| matches!(b, b' ' | b':' | b'\t' | b'\n'))
        .filter(|entry| !entry.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_the_loader_would_split() {
        assert_eq!(
            unfit_char("/usr/lib/keepalive-shim/libkeepalive_shim.so"),
            None
        );
        assert_eq!(unfit_char("/opt/my tools/libkeepalive_shim.so"), Some(' '));
        assert_eq!(unfit_char("/opt/a:b/libkeepalive_shim.so"), Some(':'));
        assert_eq!(char_name(':'), "a colon");
    }

    #[test]
    fn ld_preload_entries_are_split_as_the_loaders_split_them() {
        let split: Vec<&[u8]> = entries(b" /a.so:/x/libkeepalive_shim.so /b.so\t/c.so::").collect();
        assert_eq!(
            split,
            [
                &b"/a.so"[..],
                b"/x/libkeepalive_shim.so",
                b"/b.so",
                b"/c.so"
            ]
        );
        assert_eq!(entries(b"").count(), 0);
        assert_eq!(entries(b" : ").count(), 0);
    }
}
