//! What `LD_PRELOAD` and `/etc/ld.so.preload` can carry, and whether a process was given the
//! library by its own `LD_PRELOAD`: the loader splits both on spaces and colons (and the file on
//! any whitespace), so a path holding one of them names other files, and the program then runs
//! without the library, with only the loader's error line to say so.

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

/// Whether the value of `LD_PRELOAD` names this library (an entry whose file name is
/// [`LIBRARY_NAME`]): the process was given it by its own environment, not by
/// `/etc/ld.so.preload`.
pub fn names_library(ld_preload: &[u8]) -> bool {
    ld_preload
        .split(|b| matches!(b, b' ' | b':' | b'\t' | b'\n'))
        .any(|entry| entry.rsplit(|&b| b == b'/').next() == Some(LIBRARY_NAME.as_bytes()))
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
    fn ld_preload_names_the_library_by_file_name() {
        assert!(names_library(b"/opt/ka/libkeepalive_shim.so"));
        assert!(names_library(b"/a.so:/x/libkeepalive_shim.so /b.so"));
        assert!(names_library(b"libkeepalive_shim.so"));
        assert!(!names_library(b"/a.so:/x/libkeepalive_shim.so.bak"));
        assert!(!names_library(b""));
    }
}
