//! Destination rules: `KEEPALIVE_EXCLUDE` (connections to leave as the program made them) and
//! `KEEPALIVE_INCLUDE` (when set, the only connections to configure), each a list of addresses,
//! CIDR ranges and ports.
//!
//! The rules live in [`Settings`] as fixed-capacity `Copy` values, so the settings stay one
//! plain value published once at load time, and deciding at `connect()` ([`Settings::touches`])
//! neither allocates, locks nor panics. Parsing (at load time only) reports each bad entry; the
//! good ones still apply.
//!
//! [`Settings`]: crate::settings::Settings
//! [`Settings::touches`]: crate::settings::Settings::touches

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr};

/// How many entries each list holds; more is a problem naming the variable.
pub const MAX_RULES: usize = 32;

/// What one entry may be, for the messages about a bad one.
pub const ACCEPT_RULE: &str = "an IP address, a CIDR range, :PORT, or an address or range with \
    :PORT, IPv6 in brackets before a port (like 10.1.2.3, 10.0.0.0/8, :5432, 10.0.0.0/8:5432, \
    fd00::5, fd00::/8, [fd00::5]:5432, [fd00::]/8:5432)";

/// Where a connection goes: an IPv6 address (an IPv4 destination as its IPv4-mapped form
/// `::ffff:a.b.c.d`, so IPv4 rules match it from either kind of socket) and a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Destination {
    /// IPv6, or IPv4-mapped IPv6, in network byte order.
    pub ip: [u8; 16],
    /// The port as a number (5432), converted from the network order of the `sockaddr`.
    pub port: u16,
}

/// The IPv4-mapped prefix `::ffff:0:0/96`.
const MAPPED: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

fn mapped(v4: [u8; 4]) -> [u8; 16] {
    let mut ip = [0; 16];
    ip[..12].copy_from_slice(&MAPPED);
    ip[12..].copy_from_slice(&v4);
    ip
}

impl Destination {
    /// The destination of a `sockaddr_in` or `sockaddr_in6` given as its raw bytes in the native
    /// layout (the family in the first two bytes, in host order; the port in network order).
    /// `None` for any other family, or when `bytes` is too short to hold the address.
    pub fn from_sockaddr(bytes: &[u8]) -> Option<Destination> {
        let family = u16::from_ne_bytes([*bytes.first()?, *bytes.get(1)?]);
        let port = u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]);
        if i32::from(family) == libc::AF_INET {
            // sockaddr_in: family, port, 4 address bytes.
            let v4: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
            Some(Destination {
                ip: mapped(v4),
                port,
            })
        } else if i32::from(family) == libc::AF_INET6 {
            // sockaddr_in6: family, port, flow info (4 bytes), 16 address bytes.
            let ip: [u8; 16] = bytes.get(8..24)?.try_into().ok()?;
            Some(Destination { ip, port })
        } else {
            None
        }
    }

    /// The IPv4 address, if this is an IPv4 or IPv4-mapped destination.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        let (head, tail) = self.ip.split_at(12);
        if head != MAPPED {
            return None;
        }
        let v4: [u8; 4] = tail.try_into().ok()?;
        Some(Ipv4Addr::from(v4))
    }
}

/// `10.1.2.3:5432` or `[fd00::5]:5432` (formatted without allocating).
impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ipv4() {
            Some(v4) => write!(f, "{v4}:{}", self.port),
            None => write!(f, "[{}]:{}", Ipv6Addr::from(self.ip), self.port),
        }
    }
}

/// How a rule was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// `:PORT`: every address.
    PortOnly,
    V4,
    V6,
}

/// One entry of a list: an address range (all addresses for a port alone) and a port (or any).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The range's first address, host bits cleared; IPv4 as IPv4-mapped.
    net: [u8; 16],
    /// Its prefix length over the 128 bits of `net` (an IPv4 /8 is 104); 0 for any address.
    bits: u8,
    /// How it was written, to show it the same way.
    form: Form,
    /// 0: any port.
    port: u16,
}

impl Rule {
    /// What a matcher elsewhere (fleet mode's BPF program) needs: the range's first address
    /// (IPv4 as IPv4-mapped), its prefix length over those 128 bits (0: any address), and the
    /// port (0: any).
    pub fn parts(&self) -> ([u8; 16], u8, u16) {
        (self.net, self.bits, self.port)
    }

    const NONE: Rule = Rule {
        net: [0; 16],
        bits: 0,
        form: Form::PortOnly,
        port: 0,
    };

    /// Whether `dest` is in this rule's range and on its port.
    #[inline]
    pub fn matches(&self, dest: &Destination) -> bool {
        (self.port == 0 || self.port == dest.port) && in_prefix(&dest.ip, &self.net, self.bits)
    }
}

/// Whether the first `bits` bits of `ip` are those of `net` (whose other bits are zero).
#[inline]
fn in_prefix(ip: &[u8; 16], net: &[u8; 16], bits: u8) -> bool {
    let mut left = u32::from(bits);
    for (a, b) in ip.iter().zip(net) {
        if left == 0 {
            return true;
        }
        let take = left.min(8);
        // take is 1..=8: the top `take` bits of the byte.
        let mask = (0xff_u16 << (8 - take)) as u8;
        if a & mask != *b {
            return false;
        }
        left -= take;
    }
    true
}

/// Shown the way it may be written back: `10.0.0.0/8:5432`, `:5432`, `[fd00::]/8:5432`.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let destination = Destination {
            ip: self.net,
            port: 0,
        };
        let (bits, full) = match (self.form, destination.ipv4()) {
            (Form::PortOnly, _) => return write!(f, ":{}", self.port),
            (Form::V4, Some(v4)) => {
                write!(f, "{v4}")?;
                (self.bits.saturating_sub(96), 32)
            }
            _ if self.port != 0 => {
                write!(f, "[{}]", Ipv6Addr::from(self.net))?;
                (self.bits, 128)
            }
            _ => {
                write!(f, "{}", Ipv6Addr::from(self.net))?;
                (self.bits, 128)
            }
        };
        if bits != full {
            write!(f, "/{bits}")?;
        }
        if self.port != 0 {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// Up to [`MAX_RULES`] rules, in a fixed array so that [`Settings`](crate::settings::Settings)
/// stays `Copy` and const.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    rules: [Rule; MAX_RULES],
    len: u8,
}

impl Rules {
    pub const EMPTY: Rules = Rules {
        rules: [Rule::NONE; MAX_RULES],
        len: 0,
    };

    pub fn as_slice(&self) -> &[Rule] {
        self.rules.get(..usize::from(self.len)).unwrap_or(&[])
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether any rule matches `dest`.
    #[inline]
    pub fn matches(&self, dest: &Destination) -> bool {
        self.as_slice().iter().any(|rule| rule.matches(dest))
    }

    /// Adds `rule` unless it is already there; `false` when full.
    fn push(&mut self, rule: Rule) -> bool {
        if self.as_slice().contains(&rule) {
            return true;
        }
        match self.rules.get_mut(usize::from(self.len)) {
            Some(slot) => {
                *slot = rule;
                self.len += 1;
                true
            }
            None => false,
        }
    }
}

impl Default for Rules {
    fn default() -> Self {
        Rules::EMPTY
    }
}

/// `10.0.0.0/8, :5432`, or `none`.
impl fmt::Display for Rules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        for (i, rule) in self.as_slice().iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{rule}")?;
        }
        Ok(())
    }
}

/// A list as read: the rules that fit, every bad entry as written, and how many good entries
/// did not fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedList {
    pub rules: Rules,
    pub bad: Vec<String>,
    pub dropped: usize,
}

/// Reads a list: entries separated by commas and/or whitespace; an empty list has no rules.
pub fn parse_list(text: &str) -> ParsedList {
    let mut parsed = ParsedList {
        rules: Rules::EMPTY,
        bad: Vec::new(),
        dropped: 0,
    };
    for entry in text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|e| !e.is_empty())
    {
        match parse_rule(entry) {
            Some(rule) => {
                if !parsed.rules.push(rule) {
                    parsed.dropped += 1;
                }
            }
            None => parsed.bad.push(String::from(entry)),
        }
    }
    parsed
}

/// One entry (see [`ACCEPT_RULE`]).
pub fn parse_rule(entry: &str) -> Option<Rule> {
    // `:PORT`, but not an IPv6 address starting with `::`.
    if let Some(port) = entry.strip_prefix(':').filter(|p| !p.starts_with(':')) {
        return Some(Rule {
            port: parse_port(port)?,
            ..Rule::NONE
        });
    }
    if let Some(rest) = entry.strip_prefix('[') {
        // [IPv6], [IPv6]:PORT, [IPv6]/BITS, [IPv6]/BITS:PORT
        let (address, rest) = rest.split_once(']')?;
        let address: Ipv6Addr = address.parse().ok()?;
        let (bits, port) = match rest.split_once(':') {
            Some((range, port)) => (range, parse_port(port)?),
            None => (rest, 0),
        };
        let bits = match bits {
            "" => 128,
            _ => parse_bits(bits.strip_prefix('/')?, 128)?,
        };
        return Some(v6_rule(address, bits, port));
    }
    if entry.bytes().filter(|&b| b == b':').count() > 1 {
        // Unbracketed IPv6, which cannot carry a port: ADDRESS or ADDRESS/BITS.
        let (address, bits) = match entry.split_once('/') {
            Some((address, bits)) => (address, parse_bits(bits, 128)?),
            None => (entry, 128),
        };
        return Some(v6_rule(address.parse().ok()?, bits, 0));
    }
    // IPv4: ADDRESS, ADDRESS/BITS, with an optional :PORT.
    let (range, port) = match entry.split_once(':') {
        Some((range, port)) => (range, parse_port(port)?),
        None => (entry, 0),
    };
    let (address, bits) = match range.split_once('/') {
        Some((address, bits)) => (address, parse_bits(bits, 32)?),
        None => (range, 32),
    };
    let address: Ipv4Addr = address.parse().ok()?;
    let bits = 96 + bits;
    Some(Rule {
        net: masked(mapped(address.octets()), bits),
        bits,
        form: Form::V4,
        port,
    })
}

fn v6_rule(address: Ipv6Addr, bits: u8, port: u16) -> Rule {
    Rule {
        net: masked(address.octets(), bits),
        bits,
        form: Form::V6,
        port,
    }
}

/// `ip` with every bit after the first `bits` cleared (`10.1.2.3/8` is `10.0.0.0/8`).
fn masked(mut ip: [u8; 16], bits: u8) -> [u8; 16] {
    let mut left = u32::from(bits);
    for byte in &mut ip {
        let take = left.min(8);
        *byte &= (0xff_u16 << (8 - take)) as u8;
        left -= take;
    }
    ip
}

/// Digits only, from 0 to `max`.
fn parse_bits(text: &str, max: u8) -> Option<u8> {
    if text.is_empty() || text.len() > 3 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u8>().ok().filter(|&b| b <= max)
}

/// Digits only, from 1 to 65535.
fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|&p| p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn v4(a: &str, port: u16) -> Destination {
        let ip: Ipv4Addr = a.parse().unwrap();
        Destination {
            ip: mapped(ip.octets()),
            port,
        }
    }

    fn v6(a: &str, port: u16) -> Destination {
        let ip: Ipv6Addr = a.parse().unwrap();
        Destination {
            ip: ip.octets(),
            port,
        }
    }

    fn rule(text: &str) -> Rule {
        parse_rule(text).unwrap_or_else(|| panic!("{text} should parse"))
    }

    #[test]
    fn every_accepted_form_parses_and_shows_back_canonically() {
        for (text, shown) in [
            ("10.1.2.3", "10.1.2.3"),
            ("10.1.2.3/32", "10.1.2.3"),
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("10.1.2.3/8", "10.0.0.0/8"), // host bits cleared
            ("0.0.0.0/0", "0.0.0.0/0"),
            (":5432", ":5432"),
            ("10.1.2.3:5432", "10.1.2.3:5432"),
            ("10.0.0.0/8:5432", "10.0.0.0/8:5432"),
            ("fd00::5", "fd00::5"),
            ("[fd00::5]", "fd00::5"),
            ("fd00::/8", "fd00::/8"),
            ("fd00::1/8", "fd00::/8"),
            ("[fd00::]/8", "fd00::/8"),
            ("[fd00::5]:5432", "[fd00::5]:5432"),
            ("[fd00::]/8:5432", "[fd00::]/8:5432"),
            ("::/0", "::/0"),
            ("::1", "::1"),
            ("[::1]:22", "[::1]:22"),
            ("::ffff:10.0.0.0/104", "::ffff:10.0.0.0/104"),
        ] {
            assert_eq!(rule(text).to_string(), shown, "{text}");
            // What is shown parses to the same rule.
            assert_eq!(rule(shown), rule(text), "{shown}");
        }
    }

    #[test]
    fn every_class_of_bad_entry_is_refused() {
        for text in [
            "db.internal",     // a name: nothing resolves names at load time
            "10.1.2",          // short
            "10.1.2.300",      // octet out of range
            "010.1.2.3",       // leading zero (octal in some parsers)
            "10.0.0.0/33",     // IPv4 prefix too long
            "10.0.0.0/",       // empty prefix
            "10.0.0.0/-1",     // sign
            "10.0.0.0/+8",     // sign
            "10.0.0.0/8/8",    // two prefixes
            ":0",              // port 0
            ":65536",          // port out of range
            ":",               // no port
            ":54x",            // not a number
            "10.1.2.3:",       // empty port
            "10.1.2.3:+5",     // sign
            "fd00::/129",      // IPv6 prefix too long
            "fd00::5:5432:",   // not an address
            "[fd00::5",        // unclosed bracket
            "[fd00::5]5432",   // no colon before the port
            "[fd00::5]:",      // empty port
            "[fd00::/8]:5432", // the prefix goes after the bracket
            "[10.1.2.3]:80",   // brackets are for IPv6
            "[fd00::5]/8/8",   // two prefixes
            "fe80::1%eth0",    // zone
            "ffff::1::2",      // two ::
            "*",               // wildcards are not rules
        ] {
            assert_eq!(parse_rule(text), None, "{text:?}");
        }
    }

    #[test]
    fn ipv4_rules_match_ipv4_and_ipv4_mapped_destinations() {
        let rules = parse_list("10.0.0.0/8").rules;
        assert!(rules.matches(&v4("10.200.1.1", 80)));
        assert!(rules.matches(&v6("::ffff:10.1.2.3", 80)), "IPv4-mapped");
        assert!(!rules.matches(&v4("11.0.0.1", 80)));
        assert!(!rules.matches(&v6("fd00::1", 80)));
        assert!(
            !rules.matches(&v6("::10.1.2.3", 80)),
            "IPv4-compatible is not mapped"
        );
        // A /0 IPv4 rule is every IPv4 destination, and no IPv6 one.
        let all4 = parse_list("0.0.0.0/0").rules;
        assert!(all4.matches(&v4("1.2.3.4", 1)) && !all4.matches(&v6("fd00::1", 1)));
        // ::/0 is everything, IPv4 included.
        let all = parse_list("::/0").rules;
        assert!(all.matches(&v4("1.2.3.4", 1)) && all.matches(&v6("fd00::1", 1)));
    }

    #[test]
    fn ipv6_prefixes_and_ports() {
        let rules = parse_list("fd00::/8 [2001:db8::]/33:443").rules;
        assert!(rules.matches(&v6("fdff:1::1", 1)));
        assert!(!rules.matches(&v6("fe00::1", 1)));
        assert!(rules.matches(&v6("2001:db8:7fff::1", 443)));
        assert!(
            !rules.matches(&v6("2001:db8:8000::1", 443)),
            "bit 33 differs"
        );
        assert!(!rules.matches(&v6("2001:db8::1", 80)), "other port");
        let host = parse_list("[fd00::5]:5432").rules;
        assert!(host.matches(&v6("fd00::5", 5432)));
        assert!(!host.matches(&v6("fd00::6", 5432)));
    }

    #[test]
    fn a_port_alone_matches_every_address() {
        let rules = parse_list(":5432").rules;
        assert!(rules.matches(&v4("10.1.2.3", 5432)));
        assert!(rules.matches(&v6("fd00::1", 5432)));
        assert!(!rules.matches(&v4("10.1.2.3", 5433)));
    }

    #[test]
    fn lists_split_on_commas_and_whitespace_and_keep_the_good_entries() {
        let parsed = parse_list(" 10.0.0.0/8,:5432\t fd00::5 ,, bogus\n300.1.1.1 ");
        assert_eq!(parsed.rules.to_string(), "10.0.0.0/8, :5432, fd00::5");
        assert_eq!(parsed.bad, ["bogus", "300.1.1.1"]);
        assert_eq!(parsed.dropped, 0);
        let empty = parse_list(" , ");
        assert!(empty.rules.is_empty() && empty.bad.is_empty());
        assert_eq!(empty.rules.to_string(), "none");
    }

    #[test]
    fn more_entries_than_fit_are_counted_and_duplicates_take_no_room() {
        let mut text = String::new();
        for i in 0..40 {
            text.push_str(&alloc::format!("10.0.{i}.1 "));
        }
        let parsed = parse_list(&text);
        assert_eq!(parsed.rules.len(), MAX_RULES);
        assert_eq!(parsed.dropped, 8);
        let parsed = parse_list("10.0.0.0/8 10.1.2.3/8 10.0.0.0/8");
        assert_eq!(parsed.rules.len(), 1);
    }

    #[test]
    fn a_destination_from_raw_sockaddr_bytes() {
        // sockaddr_in for 10.1.2.3:5432, built the way the kernel sees it.
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 5432_u16.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([10, 1, 2, 3]),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: sockaddr_in is plain old data; the slice covers exactly the struct.
        let bytes = unsafe {
            core::slice::from_raw_parts(
                (&sin as *const libc::sockaddr_in).cast::<u8>(),
                core::mem::size_of::<libc::sockaddr_in>(),
            )
        };
        let dest = Destination::from_sockaddr(bytes).unwrap();
        assert_eq!(dest, v4("10.1.2.3", 5432));
        assert_eq!(dest.to_string(), "10.1.2.3:5432");
        assert_eq!(Destination::from_sockaddr(&bytes[..7]), None, "too short");

        // SAFETY: sockaddr_in6 is plain old data, valid when all zero.
        let mut sin6: libc::sockaddr_in6 = unsafe { core::mem::zeroed() };
        sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sin6.sin6_port = 443_u16.to_be();
        sin6.sin6_addr.s6_addr = "fd00::5".parse::<Ipv6Addr>().unwrap().octets();
        // SAFETY: as above, for sockaddr_in6.
        let bytes = unsafe {
            core::slice::from_raw_parts(
                (&sin6 as *const libc::sockaddr_in6).cast::<u8>(),
                core::mem::size_of::<libc::sockaddr_in6>(),
            )
        };
        let dest = Destination::from_sockaddr(bytes).unwrap();
        assert_eq!(dest, v6("fd00::5", 443));
        assert_eq!(dest.to_string(), "[fd00::5]:443");
        assert_eq!(Destination::from_sockaddr(&bytes[..23]), None, "too short");
        // IPv4-mapped through an IPv6 socket shows as IPv4.
        sin6.sin6_addr.s6_addr = mapped([10, 1, 2, 3]);
        // SAFETY: as above.
        let bytes = unsafe {
            core::slice::from_raw_parts(
                (&sin6 as *const libc::sockaddr_in6).cast::<u8>(),
                core::mem::size_of::<libc::sockaddr_in6>(),
            )
        };
        let dest = Destination::from_sockaddr(bytes).unwrap();
        assert_eq!(dest.to_string(), "10.1.2.3:443");
        assert!(parse_list("10.1.2.3").rules.matches(&dest));
        // Other families, and nothing at all.
        let unix = (libc::AF_UNIX as u16).to_ne_bytes();
        assert_eq!(
            Destination::from_sockaddr(&[unix[0], unix[1], 0, 0, 0, 0, 0, 0]),
            None
        );
        assert_eq!(Destination::from_sockaddr(&[]), None);
        assert_eq!(Destination::from_sockaddr(&[2]), None);
    }

    #[test]
    fn prefix_edges() {
        let net = masked([0xff; 16], 0);
        assert_eq!(net, [0; 16]);
        assert!(in_prefix(&[0xab; 16], &net, 0));
        let net = masked([0xff; 16], 128);
        assert!(in_prefix(&[0xff; 16], &net, 128));
        let mut almost = [0xff; 16];
        almost[15] = 0xfe;
        assert!(!in_prefix(&almost, &net, 128));
        assert!(in_prefix(&almost, &masked(almost, 127), 127));
        assert_eq!(masked([0xff; 16], 9)[..2], [0xff, 0x80]);
    }
}
