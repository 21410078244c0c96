//! Calendar months in UTC and the id ranges they cover. Ids are time-ordered, so "the
//! messages of May 2026" is `id >= Id::from_unix_ms(May 1st) AND id < Id::from_unix_ms(June 1st)`:
//! that is both the PostgreSQL partition and the unit of archiving.

use std::fmt;
use std::str::FromStr;

use concord_proto::Id;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    pub year: i32,
    /// 1..=12
    pub month: u32,
}

const DAY_MS: i64 = 86_400_000;

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil (year, month) of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as i32, m as u32)
}

impl Month {
    pub fn of_unix_ms(ms: i64) -> Month {
        let (year, month) = civil_from_days(ms.div_euclid(DAY_MS));
        Month { year, month }
    }

    pub fn of_id(id: Id) -> Month {
        Month::of_unix_ms(id.unix_ms())
    }

    pub fn start_ms(self) -> i64 {
        days_from_civil(self.year, self.month, 1) * DAY_MS
    }

    pub fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// The ids of this month: `[lo, hi)`.
    pub fn id_range(self) -> (Id, Id) {
        (
            Id::from_unix_ms(self.start_ms()),
            Id::from_unix_ms(self.next().start_ms()),
        )
    }

    /// The PostgreSQL partition's table name.
    pub fn partition(self) -> String {
        format!("messages_p{:04}{:02}", self.year, self.month)
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Month {
    type Err = String;

    /// `YYYY-MM`, 2024-01 or later (no id is older).
    fn from_str(s: &str) -> Result<Month, String> {
        let bad = || format!("{s:?} is not a month (YYYY-MM)");
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(bad());
        }
        let year: i32 = y.parse().map_err(|_| bad())?;
        let month: u32 = m.parse().map_err(|_| bad())?;
        if !(1..=12).contains(&month) || !(2024..=9999).contains(&year) {
            return Err(bad());
        }
        Ok(Month { year, month })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_round_trip_through_days() {
        // 2024-02-29 12:00 UTC (leap day) and 2026-12-31 23:59:59.999 UTC.
        assert_eq!(Month::of_unix_ms(1_709_208_000_000).to_string(), "2024-02");
        assert_eq!(Month::of_unix_ms(1_798_761_599_999).to_string(), "2026-12");
        assert_eq!(Month::of_unix_ms(1_798_761_600_000).to_string(), "2027-01");
        let m: Month = "2026-11".parse().unwrap();
        assert_eq!(m.start_ms(), 1_793_491_200_000);
        assert_eq!(m.next().to_string(), "2026-12");
        assert_eq!(
            "2026-12".parse::<Month>().unwrap().next().to_string(),
            "2027-01"
        );
        assert_eq!(m.partition(), "messages_p202611");
    }

    #[test]
    fn id_ranges_cover_their_month_exactly() {
        let m: Month = "2025-03".parse().unwrap();
        let (lo, hi) = m.id_range();
        assert_eq!(Month::of_id(lo), m);
        assert_eq!(Month::of_id(Id(hi.0 - 1)), m);
        assert_eq!(Month::of_id(hi), m.next());
        assert_eq!(m.next().id_range().0, hi);
    }

    #[test]
    fn bad_months_are_refused() {
        for s in [
            "2026-13", "2026-00", "26-01", "2026/01", "2023-12", "", "2026-1",
        ] {
            assert!(s.parse::<Month>().is_err(), "{s}");
        }
    }
}
