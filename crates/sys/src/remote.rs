//! Another process's memory, read through the kernel (`process_vm_readv`): a bad address is an
//! error (EFAULT), never a fault here, and every read has a length the caller chose.

use libc::c_int;
use std::io;

/// Reads up to `buf.len()` bytes at `addr` in process (or thread) `pid`; how many were read.
pub fn read_into(pid: i32, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes `buf`, writable for its length; the kernel checks `remote`
    // against the other process's memory and fails (EFAULT) rather than touch anything else.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `len` bytes at `addr` in process `pid` (fewer when the mapping ends sooner).
pub fn read(pid: i32, addr: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let n = read_into(pid, addr, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// The `int` at `addr` in the memory of thread `tid`; EFAULT when it is not all readable.
pub fn read_int(tid: i32, addr: u64) -> io::Result<c_int> {
    let mut bytes = [0u8; std::mem::size_of::<c_int>()];
    if read_into(tid, addr, &mut bytes)? == bytes.len() {
        Ok(c_int::from_ne_bytes(bytes))
    } else {
        Err(io::Error::from_raw_os_error(libc::EFAULT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_memory_reads_back_and_a_bad_address_is_an_error() {
        let value: c_int = 4242;
        let me = std::process::id() as i32;
        assert_eq!(read_int(me, (&raw const value) as u64).unwrap(), 4242);
        assert!(read_int(me, 8).is_err(), "an unmapped address is an error");
        let text = *b"hello";
        assert_eq!(read(me, text.as_ptr() as u64, 5).unwrap(), b"hello");
    }

    #[test]
    fn a_process_gone_is_an_error_not_a_panic() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        let e = read(pid, 0x1000, 16).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
    }
}
