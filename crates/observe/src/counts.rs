//! One block of counters as a process publishes it (the library's, a supervisor's: the layout of
//! `crates/policy/src/counts.rs`), parsed from bytes read out of that process, and added up
//! without ever wrapping.

use keepalive_shim_policy::counts::{self, VERSION};
use keepalive_shim_policy::options::{N, OPTIONS};
use serde_json::Value;

/// Magic, version, length.
pub const HEADER: usize = 16;
/// A block is never read beyond this, whatever length it claims.
pub const MAX_BLOCK: usize = HEADER + 8 * 256;

/// What one copy of the library (or one supervisor) counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub sockets_configured: u64,
    pub connections_configured: u64,
    pub connections_excluded: u64,
    /// By option, in the order of `OPTIONS`.
    pub options_left_to_program: [u64; N],
    pub options_refused: [u64; N],
}

impl Counts {
    /// The counters of a block read from a process, which must start with `magic`.
    pub fn parse(block: &[u8], magic: u64) -> Result<Counts, String> {
        let word = |o: usize| Some(u64::from_le_bytes(block.get(o..o + 8)?.try_into().ok()?));
        let half = |o: usize| Some(u32::from_le_bytes(block.get(o..o + 4)?.try_into().ok()?));
        if word(0) != Some(magic) {
            return Err("no counters at the address the process publishes".to_owned());
        }
        let version = half(8).unwrap_or(0);
        if version != VERSION {
            return Err(format!(
                "counters of layout version {version}, which this keepalive-shim does not read \
                 (it reads version {VERSION}): a library of another version"
            ));
        }
        let len = (half(12).unwrap_or(0) as usize).min((MAX_BLOCK - HEADER) / 8);
        let values: Vec<u64> = (0..len).map_while(|i| word(HEADER + 8 * i)).collect();
        if values.len() < counts::LEN {
            return Err(format!(
                "{} counters where version {VERSION} has {}",
                values.len(),
                counts::LEN
            ));
        }
        let at = |i: usize| values.get(i).copied().unwrap_or(0);
        Ok(Counts {
            sockets_configured: at(counts::SOCKETS_CONFIGURED),
            connections_configured: at(counts::CONNECTIONS_CONFIGURED),
            connections_excluded: at(counts::CONNECTIONS_EXCLUDED),
            options_left_to_program: std::array::from_fn(|i| {
                at(counts::OPTIONS_LEFT_TO_PROGRAM + i)
            }),
            options_refused: std::array::from_fn(|i| at(counts::OPTIONS_REFUSED + i)),
        })
    }

    /// Adds `other`, saturating: a process that publishes `u64::MAX` (it can forge its own
    /// counts) makes a total stick at the maximum, never wrap to a small number.
    pub fn add(&mut self, other: &Counts) {
        self.sockets_configured = self
            .sockets_configured
            .saturating_add(other.sockets_configured);
        self.connections_configured = self
            .connections_configured
            .saturating_add(other.connections_configured);
        self.connections_excluded = self
            .connections_excluded
            .saturating_add(other.connections_excluded);
        for i in 0..N {
            self.options_left_to_program[i] =
                self.options_left_to_program[i].saturating_add(other.options_left_to_program[i]);
            self.options_refused[i] =
                self.options_refused[i].saturating_add(other.options_refused[i]);
        }
    }

    /// The counters under the keys `inspect --json` uses: the metric names without
    /// `keepalive_shim_` and `_total`, the per-option ones as objects keyed by option.
    pub fn json(&self) -> serde_json::Map<String, Value> {
        let mut map = serde_json::Map::new();
        map.insert("sockets_configured".into(), self.sockets_configured.into());
        map.insert(
            "connections_configured".into(),
            self.connections_configured.into(),
        );
        map.insert(
            "connections_excluded".into(),
            self.connections_excluded.into(),
        );
        map.insert(
            "options_left_to_program".into(),
            by_option(&self.options_left_to_program),
        );
        map.insert("options_refused".into(), by_option(&self.options_refused));
        map
    }
}

/// Per-option values as a JSON object keyed by the option's name.
pub fn by_option(values: &[u64; N]) -> Value {
    Value::Object(
        OPTIONS
            .iter()
            .zip(values)
            .map(|(o, n)| (o.label.to_owned(), Value::from(*n)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use keepalive_shim_policy::counts::LIBRARY_MAGIC as MAGIC;

    fn block(len: u32) -> Vec<u8> {
        let mut block = Vec::new();
        block.extend_from_slice(&MAGIC.to_le_bytes());
        block.extend_from_slice(&VERSION.to_le_bytes());
        block.extend_from_slice(&len.to_le_bytes());
        for i in 0..u64::from(len) {
            block.extend_from_slice(&(i + 1).to_le_bytes());
        }
        block
    }

    #[test]
    fn blocks_are_read_by_magic_and_version() {
        let block = block(counts::LEN as u32);
        let c = Counts::parse(&block, MAGIC).unwrap();
        assert_eq!(
            (
                c.sockets_configured,
                c.connections_configured,
                c.connections_excluded
            ),
            (1, 2, 3)
        );
        assert_eq!(c.options_left_to_program, [4, 5, 6, 7, 8]);
        assert_eq!(c.options_refused, [9, 10, 11, 12, 13]);
        let mut other = block.clone();
        other[8] = 2;
        assert!(
            Counts::parse(&other, MAGIC)
                .unwrap_err()
                .contains("version 2")
        );
        assert!(
            Counts::parse(&block[..20], MAGIC)
                .unwrap_err()
                .contains("counters where")
        );
        assert!(
            Counts::parse(&[0; 16], MAGIC)
                .unwrap_err()
                .contains("no counters")
        );
        assert!(Counts::parse(&block, MAGIC + 1).is_err());
    }

    #[test]
    fn a_claimed_length_beyond_the_cap_reads_no_further() {
        let mut b = block(counts::LEN as u32);
        b[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Counts::parse(&b, MAGIC).is_ok());
    }

    #[test]
    fn totals_saturate() {
        let mut total = Counts {
            sockets_configured: u64::MAX - 1,
            ..Counts::default()
        };
        total.add(&Counts {
            sockets_configured: 5,
            options_refused: [u64::MAX; N],
            ..Counts::default()
        });
        total.add(&Counts {
            options_refused: [1; N],
            ..Counts::default()
        });
        assert_eq!(total.sockets_configured, u64::MAX);
        assert_eq!(total.options_refused, [u64::MAX; N]);
    }
}
