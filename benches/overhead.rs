//! What the library costs a program, measured inside one process: the library is loaded with
//! `dlopen` and its `socket`/`connect`/`close`/`dup`/`fcntl` are called in turn with libc's,
//! interleaved call by call in rounds, so the machine's drift falls on both alike; the median of
//! the per-round ratios is reported with its interquartile range. Destination rules are measured
//! on a second copy of the library, loaded with `KEEPALIVE_EXCLUDE` set.
//!
//! `cargo bench --bench overhead -- [LIBRARY] [--peer NAME=PATH]...` (scripts/bench.sh runs it
//! with the release library and Debian's libkeepalive). Prints one Markdown row per measurement.

use libc::{c_int, c_void, sockaddr, socklen_t};
use std::ffi::CString;
use std::hint::black_box;
use std::time::Instant;

type SocketFn = unsafe extern "C" fn(c_int, c_int, c_int) -> c_int;
type ConnectFn = unsafe extern "C" fn(c_int, *const sockaddr, socklen_t) -> c_int;
type CloseFn = unsafe extern "C" fn(c_int) -> c_int;
type AcceptFn = unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int;
type FcntlFn = unsafe extern "C" fn(c_int, c_int, usize) -> c_int;

/// A preload library opened with dlopen, and its hooks (libc's where it has none).
struct Loaded {
    socket: SocketFn,
    connect: Option<ConnectFn>,
    close: CloseFn,
    dup: CloseFn,
    fcntl: FcntlFn,
    accept: AcceptFn,
}

fn open(path: &str) -> Loaded {
    let c = CString::new(path).unwrap();
    // SAFETY: dlopen with a valid path; RTLD_LOCAL keeps its symbols out of this program's calls.
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!handle.is_null(), "dlopen {path} failed");
    let sym = |name: &str| {
        let n = CString::new(name).unwrap();
        // SAFETY: looking a symbol up in the handle just opened.
        unsafe { libc::dlsym(handle, n.as_ptr()) }
    };
    let socket = sym("socket");
    assert!(!socket.is_null(), "{path} has no socket");
    let connect = sym("connect");
    let or_libc = |p: *mut c_void, libc_fn: usize| if p.is_null() { libc_fn } else { p as usize };
    // SAFETY: the symbols have libc's signatures (fcntl's third argument as a machine word, as the
    // library declares it).
    unsafe {
        Loaded {
            socket: std::mem::transmute::<*mut c_void, SocketFn>(socket),
            connect: (!connect.is_null())
                .then(|| std::mem::transmute::<*mut c_void, ConnectFn>(connect)),
            close: std::mem::transmute::<usize, CloseFn>(or_libc(
                sym("close"),
                libc::close as *const () as usize,
            )),
            dup: std::mem::transmute::<usize, CloseFn>(or_libc(
                sym("dup"),
                libc::dup as *const () as usize,
            )),
            fcntl: std::mem::transmute::<usize, FcntlFn>(or_libc(
                sym("fcntl"),
                libc::fcntl as *const () as usize,
            )),
            accept: std::mem::transmute::<usize, AcceptFn>(or_libc(
                sym("accept"),
                libc::accept as *const () as usize,
            )),
        }
    }
}

/// A second copy of the library at another path, loaded with `vars` in the environment (its
/// constructor reads them), so one process can measure two configurations.
fn open_copy(library: &str, name: &str, vars: &[(&str, &str)]) -> Loaded {
    let copy = std::env::temp_dir().join(format!("kas-bench-{}-{name}.so", std::process::id()));
    std::fs::copy(library, &copy).expect("copy the library");
    // SAFETY: no other thread runs yet; the variables are removed again right after loading.
    unsafe {
        for (k, v) in vars {
            std::env::set_var(k, v);
        }
    }
    let loaded = open(copy.to_str().unwrap());
    // SAFETY: as above.
    unsafe {
        for (k, _) in vars {
            std::env::remove_var(k);
        }
    }
    let _ = std::fs::remove_file(&copy);
    loaded
}

fn set(fd: c_int, level: c_int, name: c_int, value: c_int) {
    // SAFETY: a live int for the duration of the call.
    unsafe { libc::setsockopt(fd, level, name, (&raw const value).cast(), 4) };
}

/// One TCP `socket()` + `close()` through a library's hooks; the caller times it.
fn tcp_through(lib: &Loaded) -> f64 {
    // SAFETY: `socket` and `close` have libc's contracts.
    unsafe {
        (lib.close)(black_box((lib.socket)(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
        )))
    };
    0.0
}

/// libc's socket followed by the same options made inline: what the library cannot beat.
fn floor_socket(options: usize) -> c_int {
    // SAFETY: plain socket call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    let all = [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 30),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 10),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3),
        (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 60_000),
    ];
    for &(level, name, value) in &all[..options] {
        set(fd, level, name, value);
    }
    fd
}

fn close(fd: c_int) {
    // SAFETY: closing a descriptor this benchmark made.
    unsafe { libc::close(fd) };
}

/// Runs `f` and returns the nanoseconds it took, or the time it measured itself (connect).
fn time(f: &mut dyn FnMut() -> f64) -> f64 {
    let start = Instant::now();
    let own = f();
    if own > 0.0 {
        own
    } else {
        start.elapsed().as_nanos() as f64
    }
}

struct Result {
    ratio: f64,
    p25: f64,
    p75: f64,
    ns_a: f64,
    ns_b: f64,
}

/// `rounds` rounds of `n` calls of each of A and B, interleaved call by call (A first on even
/// calls, B first on odd ones), so whatever the machine does in the background falls on both
/// alike. Each round gives the ratio of its median call times (a single call that the kernel's
/// deferred work lands on can take 50 times longer, and would swamp a sum); the median of those
/// ratios over the rounds is reported, with its interquartile range.
fn compare(
    rounds: usize,
    n: usize,
    a: &mut dyn FnMut() -> f64,
    b: &mut dyn FnMut() -> f64,
) -> Result {
    for _ in 0..n.min(100) {
        time(a);
        time(b);
    }
    let q = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * p).round() as usize]
    };
    let (mut ratios, mut na, mut nb) = (Vec::new(), Vec::new(), Vec::new());
    let (mut xs, mut ys) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..rounds {
        xs.clear();
        ys.clear();
        for call in 0..n {
            if call % 2 == 0 {
                xs.push(time(a));
                ys.push(time(b));
            } else {
                ys.push(time(b));
                xs.push(time(a));
            }
        }
        let (x, y) = (q(&mut xs, 0.5), q(&mut ys, 0.5));
        ratios.push(x / y);
        na.push(x);
        nb.push(y);
    }
    Result {
        ratio: q(&mut ratios, 0.5),
        p25: q(&mut ratios, 0.25),
        p75: q(&mut ratios, 0.75),
        ns_a: q(&mut na, 0.5),
        ns_b: q(&mut nb, 0.5),
    }
}

fn row(what: &str, against: &str, r: &Result) {
    println!(
        "| {what} | {against} | {:.0} ns | {:.0} ns | {:.3} ({:.3}–{:.3}) | {:+.1}% |",
        r.ns_a,
        r.ns_b,
        r.ratio,
        r.p25,
        r.p75,
        (r.ratio - 1.0) * 100.0
    );
}

/// Raises the soft descriptor limit to above `fd`, within the hard one; false when it cannot.
fn raise_fd_limit(fd: u64) -> bool {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reading and setting this process's own limit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        if limit.rlim_cur > fd {
            return true;
        }
        if limit.rlim_max <= fd {
            return false;
        }
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
    }
}

/// A loopback listener and its address.
fn listener() -> (c_int, libc::sockaddr_in) {
    // SAFETY: a plain socket call.
    listen_on(unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) })
}

/// `fd` bound to a free loopback port and listening; its address.
fn listen_on(fd: c_int) -> (c_int, libc::sockaddr_in) {
    // SAFETY: plain socket calls on a zeroed sockaddr_in.
    unsafe {
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as socklen_t;
        libc::bind(fd, (&raw const addr).cast(), len);
        libc::listen(fd, 4096);
        libc::getsockname(fd, (&raw mut addr).cast(), &mut len);
        (fd, addr)
    }
}

/// Times only `accept` on `server` of a connection libc made to it; then resets both ends and
/// closes them, the accepted one with `close` (the library's, so it forgets the number: the
/// next accept meets it as new).
fn timed_accept(
    accept: AcceptFn,
    close_fn: CloseFn,
    server: c_int,
    addr: &libc::sockaddr_in,
) -> f64 {
    let fd = floor_socket(0);
    let len = std::mem::size_of::<libc::sockaddr_in>() as socklen_t;
    // SAFETY: a live sockaddr_in of `len` bytes.
    let rc = unsafe { libc::connect(fd, (addr as *const libc::sockaddr_in).cast(), len) };
    assert_eq!(rc, 0, "connect");
    let start = Instant::now();
    // SAFETY: accept on the listener, no address asked for.
    let peer = unsafe { accept(server, std::ptr::null_mut(), std::ptr::null_mut()) };
    let ns = start.elapsed().as_nanos() as f64;
    assert!(peer >= 0, "accept");
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: plain socket calls on descriptors made here.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            8,
        );
        close_fn(peer);
    }
    close(fd);
    ns.max(1.0)
}

/// Times only `connect` on a socket `make` made; then accepts, resets and closes both ends.
fn timed_connect(
    make: &dyn Fn() -> c_int,
    connect: ConnectFn,
    server: c_int,
    addr: &libc::sockaddr_in,
) -> f64 {
    let fd = make();
    let len = std::mem::size_of::<libc::sockaddr_in>() as socklen_t;
    let start = Instant::now();
    // SAFETY: a live sockaddr_in of `len` bytes.
    let rc = unsafe { connect(fd, (addr as *const libc::sockaddr_in).cast(), len) };
    let ns = start.elapsed().as_nanos() as f64;
    assert_eq!(rc, 0, "connect");
    // SAFETY: plain socket calls on descriptors made here.
    unsafe {
        let peer = libc::accept(server, std::ptr::null_mut(), std::ptr::null_mut());
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            8,
        );
        libc::close(peer);
    }
    close(fd);
    ns.max(1.0)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let library = args
        .iter()
        .find(|a| !a.starts_with("--") && !a.contains('='))
        .cloned()
        .unwrap_or_else(|| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/target/release/libkeepalive_shim.so"
            )
            .to_owned()
        });
    let peers: Vec<(String, String)> = args
        .windows(2)
        .filter(|w| w[0] == "--peer")
        .filter_map(|w| {
            w[1].split_once('=')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
        })
        .collect();
    let ours = open(&library);
    let quick = std::env::var_os("KEEPALIVE_SHIM_BENCH_QUICK").is_some();
    let (rounds, n) = if quick { (10, 200) } else { (60, 2000) };

    println!(
        "| measurement | against | with the library | without | ratio, median (p25–p75) | cost |"
    );
    println!("|---|---|---|---|---|---|");
    let r = compare(rounds, n, &mut || tcp_through(&ours), &mut || {
        close(black_box(floor_socket(5)));
        0.0
    });
    row(
        "TCP socket() + close()",
        "libc socket() + the 5 setsockopt inline",
        &r,
    );
    for (name, domain, ty) in [
        ("UDP", libc::AF_INET, libc::SOCK_DGRAM),
        ("UNIX", libc::AF_UNIX, libc::SOCK_STREAM),
    ] {
        let r = compare(
            rounds,
            n,
            &mut || {
                // SAFETY: socket() and close() with libc's contracts.
                unsafe { (ours.close)(black_box((ours.socket)(domain, ty, 0))) };
                0.0
            },
            &mut || {
                // SAFETY: socket() with libc's contract.
                close(black_box(unsafe { libc::socket(domain, ty, 0) }));
                0.0
            },
        );
        row(&format!("{name} socket() + close()"), "libc socket()", &r);
    }
    // Pass-through: calls the library only watches (dup and close keep its descriptor table).
    let r = compare(
        rounds,
        n,
        &mut || {
            // SAFETY: dup and close of stdin's descriptor, with libc's contracts.
            unsafe { (ours.close)(black_box((ours.dup)(0))) };
            0.0
        },
        &mut || {
            // SAFETY: as above, libc's own.
            unsafe { libc::close(black_box(libc::dup(0))) };
            0.0
        },
    );
    row("dup() + close() (pass-through)", "libc dup() + close()", &r);
    let r = compare(
        rounds,
        n,
        &mut || {
            // SAFETY: F_GETFL on stdin's descriptor.
            black_box(unsafe { (ours.fcntl)(0, libc::F_GETFL, 0) });
            0.0
        },
        &mut || {
            // SAFETY: as above, libc's own.
            black_box(unsafe { libc::fcntl(0, libc::F_GETFL) });
            0.0
        },
    );
    row("fcntl(F_GETFL) (pass-through)", "libc fcntl()", &r);

    let (server, addr) = listener();
    let our_connect = ours.connect.expect("the library exports connect");
    let (crounds, cn) = if quick { (6, 50) } else { (40, 300) };
    // SAFETY: the library's socket has libc's contract.
    let ours_tcp = || unsafe { (ours.socket)(libc::AF_INET, libc::SOCK_STREAM, 0) };
    let floor_tcp = || floor_socket(5);
    let r = compare(
        crounds,
        cn,
        &mut || timed_connect(&ours_tcp, our_connect, server, &addr),
        &mut || timed_connect(&floor_tcp, libc::connect, server, &addr),
    );
    row("TCP connect() on loopback", "libc connect()", &r);
    // accept(): on a listener the library configured at socket() the accepted socket takes its
    // state (two atomic operations); on one it never saw (systemd's socket activation) it is
    // read back and configured once.
    let configured_listener = {
        // SAFETY: the library's socket has libc's contract.
        let fd = unsafe { (ours.socket)(libc::AF_INET, libc::SOCK_STREAM, 0) };
        listen_on(fd)
    };
    let r = compare(
        crounds,
        cn,
        &mut || {
            timed_accept(
                ours.accept,
                ours.close,
                configured_listener.0,
                &configured_listener.1,
            )
        },
        &mut || {
            timed_accept(
                libc::accept,
                ours.close,
                configured_listener.0,
                &configured_listener.1,
            )
        },
    );
    row(
        "TCP accept(), listener made by socket()",
        "libc accept()",
        &r,
    );
    let r = compare(
        crounds,
        cn,
        &mut || timed_accept(ours.accept, ours.close, server, &addr),
        &mut || timed_accept(libc::accept, ours.close, server, &addr),
    );
    row(
        "TCP accept(), listener the library never saw (configured here)",
        "libc accept()",
        &r,
    );
    // A socket the library never saw (inherited, raw syscall): it asks the kernel, then sets.
    // Each one is moved to a descriptor number used once only (10000 upwards): a reused number
    // would look like a socket the library configured earlier, as the README's limits say.
    let (urounds, un) = if quick { (4, 50) } else { (25, 300) };
    let next = std::cell::Cell::new(10_000);
    let high = raise_fd_limit(10_000 + (urounds * un + 200) as u64);
    let plain_tcp = || floor_socket(0);
    let unseen_tcp = || {
        let fd = floor_socket(0);
        let to = next.get();
        next.set(to + 1);
        // SAFETY: moving a descriptor this benchmark made to a free number.
        unsafe {
            libc::dup2(fd, to);
            libc::close(fd);
        }
        to
    };
    if high {
        let r = compare(
            urounds,
            un,
            &mut || timed_connect(&unseen_tcp, our_connect, server, &addr),
            &mut || timed_connect(&plain_tcp, libc::connect, server, &addr),
        );
        row(
            "TCP connect(), socket not made by socket() (configured here)",
            "libc connect()",
            &r,
        );
    }

    // Destination rules: every connect() copies the address through the kernel and matches it.
    let ruled = open_copy(
        &library,
        "rules",
        &[("KEEPALIVE_EXCLUDE", "10.99.0.0/16, fd99::/16, :9")],
    );
    let ruled_connect = ruled.connect.expect("the library exports connect");
    // SAFETY: the library's socket has libc's contract.
    let ruled_tcp = || unsafe { (ruled.socket)(libc::AF_INET, libc::SOCK_STREAM, 0) };
    let r = compare(
        crounds,
        cn,
        &mut || timed_connect(&ruled_tcp, ruled_connect, server, &addr),
        &mut || timed_connect(&floor_tcp, libc::connect, server, &addr),
    );
    row(
        "TCP connect(), KEEPALIVE_EXCLUDE set, destination not excluded",
        "libc connect()",
        &r,
    );
    let excluded = open_copy(&library, "excluded", &[("KEEPALIVE_EXCLUDE", "127.0.0.1")]);
    let excluded_connect = excluded.connect.expect("the library exports connect");
    // SAFETY: the library's socket has libc's contract.
    let excluded_tcp = || unsafe { (excluded.socket)(libc::AF_INET, libc::SOCK_STREAM, 0) };
    let r = compare(
        crounds,
        cn,
        &mut || timed_connect(&excluded_tcp, excluded_connect, server, &addr),
        &mut || timed_connect(&floor_tcp, libc::connect, server, &addr),
    );
    row(
        "TCP connect() to an excluded destination (options taken back)",
        "libc connect()",
        &r,
    );

    for (name, path) in &peers {
        let peer = open(path);
        // libkeepalive sets SO_KEEPALIVE and, when its variables are set, three TCP options.
        let r = compare(rounds, n, &mut || tcp_through(&peer), &mut || {
            close(black_box(floor_socket(4)));
            0.0
        });
        row(
            &format!("{name}: TCP socket() + close()"),
            "libc socket() + its 4 setsockopt inline",
            &r,
        );
        let r = compare(rounds, n, &mut || tcp_through(&ours), &mut || {
            tcp_through(&peer)
        });
        row(
            "keepalive-shim: TCP socket() + close()",
            &format!("{name} (which sets one option fewer)"),
            &r,
        );
    }
}
