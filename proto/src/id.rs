//! 64-bit time-ordered ids: 41 bits of milliseconds since the Concord epoch, 10 bits of worker
//! id (each relay instance holds a lease on one) and 12 bits of per-millisecond sequence.
//! They travel as decimal strings in JSON, because JavaScript numbers stop at 2^53.
//! The Concord epoch is 2024-01-01T00:00:00Z; `IdGenerator` takes `now` like everything here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// 2024-01-01T00:00:00Z in unix milliseconds.
pub const EPOCH_MS: i64 = 1_704_067_200_000;
pub const WORKER_BITS: u32 = 10;
pub const SEQUENCE_BITS: u32 = 12;
pub const MAX_WORKER_ID: u16 = (1 << WORKER_BITS) - 1;
const SEQUENCE_MASK: i64 = (1 << SEQUENCE_BITS) - 1;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Id(pub i64);

impl Id {
    /// Smallest id that could have been minted at or after `unix_ms`; used for time filters.
    pub fn from_unix_ms(unix_ms: i64) -> Id {
        Id((unix_ms - EPOCH_MS).max(0) << (WORKER_BITS + SEQUENCE_BITS))
    }

    pub fn unix_ms(self) -> i64 {
        (self.0 >> (WORKER_BITS + SEQUENCE_BITS)) + EPOCH_MS
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an id is a positive decimal integer below 2^63")]
pub struct InvalidId;

impl FromStr for Id {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Id, InvalidId> {
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidId);
        }
        match s.parse::<i64>() {
            Ok(v) if v > 0 => Ok(Id(v)),
            _ => Err(InvalidId),
        }
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an id as a decimal string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Id, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Id, E> {
                match i64::try_from(v) {
                    Ok(v) if v > 0 => Ok(Id(v)),
                    _ => Err(E::custom(InvalidId)),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Id, E> {
                if v > 0 {
                    Ok(Id(v))
                } else {
                    Err(E::custom(InvalidId))
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Id {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[0-9]{1,19}$"))
            .description(Some("64-bit time-ordered id as a decimal string"))
            .examples([serde_json::json!("271982361839001600")])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Id {}

/// Sans-IO id generator: the caller supplies the current time. Ids are strictly increasing per
/// generator even when the clock steps back or more than 4,096 ids are needed in a millisecond
/// (the generator then runs slightly ahead of the clock).
#[derive(Debug, Clone)]
pub struct IdGenerator {
    worker: i64,
    last_ms: i64,
    sequence: i64,
}

impl IdGenerator {
    pub fn new(worker_id: u16) -> IdGenerator {
        assert!(worker_id <= MAX_WORKER_ID, "worker id out of range");
        IdGenerator {
            worker: i64::from(worker_id),
            last_ms: 0,
            sequence: 0,
        }
    }

    pub fn worker_id(&self) -> u16 {
        self.worker as u16
    }

    pub fn next(&mut self, now_unix_ms: i64) -> Id {
        let now = (now_unix_ms - EPOCH_MS).max(0);
        if now > self.last_ms {
            self.last_ms = now;
            self.sequence = 0;
        } else {
            self.sequence = (self.sequence + 1) & SEQUENCE_MASK;
            if self.sequence == 0 {
                self.last_ms += 1;
            }
        }
        Id((self.last_ms << (WORKER_BITS + SEQUENCE_BITS))
            | (self.worker << SEQUENCE_BITS)
            | self.sequence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increase_and_carry_time() {
        let mut g = IdGenerator::new(7);
        let t = EPOCH_MS + 1_000_000;
        let mut last = Id(0);
        for i in 0..10_000 {
            let id = g.next(t + i / 5000);
            assert!(id > last);
            last = id;
        }
        let id = g.next(t + 5_000);
        assert_eq!(id.unix_ms(), t + 5_000);
        assert_eq!((id.0 >> SEQUENCE_BITS) & i64::from(MAX_WORKER_ID), 7);
        // clock going backwards still gives increasing ids
        assert!(g.next(t) > id);
    }

    #[test]
    fn parse_and_serde() {
        assert_eq!("42".parse::<Id>(), Ok(Id(42)));
        for bad in ["", "0", "-1", "1e3", " 1", "99999999999999999999", "+5"] {
            assert!(bad.parse::<Id>().is_err(), "{bad}");
        }
        assert_eq!(serde_json::to_string(&Id(5)).unwrap(), "\"5\"");
        assert_eq!(serde_json::from_str::<Id>("\"5\"").unwrap(), Id(5));
        assert_eq!(serde_json::from_str::<Id>("5").unwrap(), Id(5));
        assert!(serde_json::from_str::<Id>("-5").is_err());
        assert!(serde_json::from_str::<Id>("null").is_err());
    }
}
