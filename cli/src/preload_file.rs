//! The loader's machine-wide preload list (`/etc/ld.so.preload`) as text: its entries as glibc's
//! loader reads them, adding the library's line and taking it out again byte for byte, and which
//! paths the loader could not carry. Pure functions over bytes; `system` does the file work.

use keepalive_shim_policy::preload::{self, LIBRARY_NAME as LIBRARY};

/// The loader's machine-wide preload list.
pub const PRELOAD: &str = "/etc/ld.so.preload";

/// The entries of one line of the loader's list: `#` comments cut to the end of the line, then
/// split as `LD_PRELOAD` is (space, tab, newline, ':': what glibc's rtld splits the file on).
pub fn entries(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let line = match line.iter().position(|&b| b == b'#') {
        Some(at) => &line[..at],
        None => line,
    };
    preload::entries(line)
}

/// The file's lines, each with its `\n` (the last one may have none).
pub fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split_inclusive(|&b| b == b'\n')
}

/// Whether `line` names one file called libkeepalive_shim.so and nothing else: a line of ours.
fn ours(line: &[u8]) -> Option<&[u8]> {
    let mut it = entries(line);
    let only = it.next()?;
    (it.next().is_none() && is_library(only)).then_some(only)
}

pub fn is_library(entry: &[u8]) -> bool {
    entry.rsplit(|&b| b == b'/').next() == Some(LIBRARY.as_bytes())
}

/// The text with `path` added: `None` when the loader already reads `path` from it (on any
/// line). Otherwise `path` and a newline go first and every byte of `text` follows unchanged,
/// so that [`remove`] gives back exactly `text`.
pub fn add(text: &[u8], path: &[u8]) -> Option<Vec<u8>> {
    if lines(text).any(|line| entries(line).any(|e| e == path)) {
        return None;
    }
    let mut out = Vec::with_capacity(path.len() + 1 + text.len());
    out.extend_from_slice(path);
    out.push(b'\n');
    out.extend_from_slice(text);
    Some(out)
}

/// What [`remove`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Removed {
    /// The text without the lines taken; every other line byte for byte.
    pub text: Vec<u8>,
    /// The paths of the lines removed.
    pub paths: Vec<Vec<u8>>,
    /// Lines (numbered from 1) that name the library and were kept: without a record, those
    /// that name it among other entries.
    pub kept: Vec<usize>,
}

/// The text without lines of ours (see [`ours`]): with `recorded`, for each path in it the
/// first line that names that path alone (as [`add`] wrote it); without, every line of ours.
/// Every other line stays byte for byte, and those naming the library are listed in `kept`.
pub fn remove(text: &[u8], recorded: Option<&[Vec<u8>]>) -> Removed {
    let mut todo: Option<Vec<&[u8]>> = recorded.map(|r| r.iter().map(Vec::as_slice).collect());
    let mut out = Removed {
        text: Vec::with_capacity(text.len()),
        paths: Vec::new(),
        kept: Vec::new(),
    };
    for (n, line) in lines(text).enumerate() {
        if let Some(path) = ours(line) {
            let take = match &mut todo {
                None => true,
                Some(todo) => todo
                    .iter()
                    .position(|p| *p == path)
                    .map(|at| todo.remove(at))
                    .is_some(),
            };
            if take {
                out.paths.push(path.to_vec());
                continue;
            }
        }
        if entries(line).any(is_library) {
            out.kept.push(n + 1);
        }
        out.text.extend_from_slice(line);
    }
    out
}

/// Every entry naming the library: (line number from 1, path).
pub fn named(text: &[u8]) -> Vec<(usize, Vec<u8>)> {
    lines(text)
        .enumerate()
        .flat_map(|(n, line)| {
            entries(line)
                .filter(|e| is_library(e))
                .map(move |e| (n + 1, e.to_vec()))
        })
        .collect()
}

/// Why `path` cannot go in `/etc/ld.so.preload`, naming the character.
pub fn unfit(path: &[u8]) -> Option<String> {
    let shown = String::from_utf8_lossy(path);
    let shown = shown.escape_debug();
    if path.first() != Some(&b'/') {
        return Some(format!(
            "the library path \"{shown}\" is not absolute: the loader would look for it \
             relative to each program's working directory"
        ));
    }
    for (at, &b) in path.iter().enumerate() {
        let what = match b {
            b' ' => "a space",
            b'\t' => "a tab",
            b'\n' => "a newline",
            b':' => "a ':'",
            b'#' => "a '#' (the loader reads the rest of the line as a comment)",
            b'$' => "a '$' (the loader expands $LIB, $PLATFORM and $ORIGIN)",
            0..0x20 | 0x7f => "a control character",
            _ => continue,
        };
        return Some(format!(
            "the library path \"{shown}\" has {what} at byte {at}: the loader splits \
             {PRELOAD} and LD_PRELOAD on spaces, tabs, newlines and ':', and would load \
             nothing; install the library under a path without them"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    /// Bytes shown as a path, for the messages.
    fn os(bytes: &[u8]) -> OsString {
        OsString::from_vec(bytes.to_vec())
    }

    const LIB: &[u8] = b"/usr/lib/keepalive-shim/libkeepalive_shim.so";

    #[test]
    fn add_puts_the_line_first_and_keeps_every_other_byte() {
        assert_eq!(add(b"", LIB).unwrap(), [LIB, b"\n"].concat());
        let other = b"/opt/other.so\n# a comment\n\n  /lib/x.so:/lib/y.so";
        let added = add(other, LIB).unwrap();
        assert_eq!(added, [LIB, b"\n", other].concat());
        assert!(added.ends_with(other), "every other byte, in order");
    }

    #[test]
    fn add_is_idempotent_wherever_the_loader_reads_the_path() {
        let once = add(b"/opt/other.so\n", LIB).unwrap();
        assert_eq!(add(&once, LIB), None);
        // Already named on a line of its own, or among others: nothing to add.
        assert_eq!(add(&[b"/a.so ", LIB, b" /b.so\n"].concat(), LIB), None);
        assert_eq!(add(&[b"/a.so:", LIB].concat(), LIB), None);
        // In a comment the loader does not read it: added.
        assert!(add(&[b"# ", LIB, b"\n"].concat(), LIB).is_some());
        // Another copy is another path.
        assert!(add(b"/opt/ka/libkeepalive_shim.so\n", LIB).is_some());
    }

    #[test]
    fn remove_undoes_add_byte_for_byte() {
        for before in [
            &b""[..],
            b"\n",
            b"/opt/other.so",
            b"/opt/other.so\n",
            b"# comment\r\n/opt/other.so  \n\n\t/x.so\n",
        ] {
            let added = add(before, LIB).unwrap();
            let removed = remove(&added, None);
            assert_eq!(removed.text, before, "{:?}", os(before));
            assert_eq!(removed.paths, [LIB.to_vec()]);
            assert!(removed.kept.is_empty());
            // Removing again changes nothing.
            let again = remove(&removed.text, None);
            assert_eq!(again.text, before);
            assert!(again.paths.is_empty());
        }
    }

    #[test]
    fn remove_takes_every_line_of_ours_and_nothing_else() {
        let text = b"/a.so\n/opt/ka/libkeepalive_shim.so\n  /usr/lib/libkeepalive_shim.so \t\n\
            /b.so /usr/lib/libkeepalive_shim.so\n# /c/libkeepalive_shim.so\n\
            /d/libkeepalive_shim.so.1\n/e/libkeepalive_shim.so";
        let removed = remove(text, None);
        assert_eq!(
            removed.text,
            b"/a.so\n/b.so /usr/lib/libkeepalive_shim.so\n# /c/libkeepalive_shim.so\n\
              /d/libkeepalive_shim.so.1\n"
        );
        assert_eq!(
            removed.paths,
            [
                b"/opt/ka/libkeepalive_shim.so".to_vec(),
                b"/usr/lib/libkeepalive_shim.so".to_vec(),
                b"/e/libkeepalive_shim.so".to_vec(),
            ]
        );
        assert_eq!(removed.kept, [4], "the line with another entry is kept");
    }

    #[test]
    fn remove_with_a_record_undoes_add_and_keeps_what_was_there() {
        let site = [
            &b"# site\r\n"[..],
            LIB,
            b"\n/a.so /x/libkeepalive_shim.so\n",
        ]
        .concat();
        // The library was named already: enable added nothing, disable removes nothing.
        assert_eq!(add(&site, LIB), None);
        let removed = remove(&site, Some(&[]));
        assert_eq!(removed.text, site);
        assert_eq!(removed.kept, [2, 3]);
        assert!(removed.paths.is_empty());
        // Another copy named by the site: enable adds ours, disable takes only ours.
        let other = b"/opt/old/libkeepalive_shim.so\n/b.so".to_vec();
        let added = add(&other, LIB).unwrap();
        let removed = remove(&added, Some(&[LIB.to_vec()]));
        assert_eq!(removed.text, other);
        assert_eq!(removed.paths, [LIB.to_vec()]);
        assert_eq!(removed.kept, [2]);
        // A recorded path the site removed since: nothing to remove.
        let removed = remove(&other, Some(&[LIB.to_vec()]));
        assert_eq!(removed.text, other);
        assert!(removed.paths.is_empty());
    }

    #[test]
    fn a_file_of_ours_alone_ends_up_empty() {
        assert!(remove(&[LIB, b"\n"].concat(), None).text.is_empty());
        assert!(remove(LIB, None).text.is_empty());
        assert!(
            remove(&[LIB, b"\n", LIB, b"\n"].concat(), None)
                .text
                .is_empty()
        );
        let removed = remove(b"", None);
        assert!(removed.text.is_empty() && removed.paths.is_empty());
    }

    #[test]
    fn named_lists_every_entry_the_loader_reads() {
        let text = [
            b"/a.so\n",
            LIB,
            b"\n/b.so:/x/libkeepalive_shim.so # /y/libkeepalive_shim.so\n",
        ]
        .concat();
        assert_eq!(
            named(&text),
            [(2, LIB.to_vec()), (3, b"/x/libkeepalive_shim.so".to_vec())]
        );
    }

    #[test]
    fn unfit_names_the_character() {
        assert_eq!(unfit(LIB), None);
        for (path, what) in [
            (
                &b"/opt/my libs/libkeepalive_shim.so"[..],
                "a space at byte 7",
            ),
            (b"/opt/a:b/libkeepalive_shim.so", "a ':' at byte 6"),
            (b"/opt/a\tb/libkeepalive_shim.so", "a tab at byte 6"),
            (b"/opt/a\nb/libkeepalive_shim.so", "a newline at byte 6"),
            (b"/opt/#/libkeepalive_shim.so", "a '#'"),
            (b"/opt/$LIB/libkeepalive_shim.so", "a '$'"),
            (b"libkeepalive_shim.so", "not absolute"),
            (b"./libkeepalive_shim.so", "not absolute"),
        ] {
            let why = unfit(path).unwrap_or_default();
            assert!(why.contains(what), "{:?}: {why}", os(path));
        }
    }
}
