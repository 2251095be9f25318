//! The maintenance window: `"HH:MM-HH:MM"` in UTC, a daily range that may wrap past
//! midnight (`"23:00-01:00"`). UTC only: a box's local time zone is not configured
//! anywhere else in branchd, and a window in UTC means the same instant on every box of
//! a wave.

use std::fmt;

/// A daily maintenance window in UTC, `[start, end)` in minutes of the day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    start: u16,
    end: u16,
}

impl Window {
    /// Parses `"HH:MM-HH:MM"` (24-hour clock; start and end differ).
    pub fn parse(s: &str) -> Result<Window, String> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("{s:?} is not HH:MM-HH:MM"))?;
        let minute = |t: &str| -> Result<u16, String> {
            let t = t.trim();
            let (h, m) = t
                .split_once(':')
                .ok_or_else(|| format!("{t:?} is not HH:MM"))?;
            let ok = |x: &str| x.len() == 2 && x.bytes().all(|c| c.is_ascii_digit());
            if !ok(h) || !ok(m) {
                return Err(format!("{t:?} is not HH:MM"));
            }
            let (h, m): (u16, u16) = (
                h.parse().map_err(|_| format!("{t:?} is not HH:MM"))?,
                m.parse().map_err(|_| format!("{t:?} is not HH:MM"))?,
            );
            if h > 23 || m > 59 {
                return Err(format!("{t:?} is not a time of day (00:00..23:59)"));
            }
            Ok(h * 60 + m)
        };
        let (start, end) = (minute(a)?, minute(b)?);
        if start == end {
            return Err(format!("{s:?} is empty (start equals end)"));
        }
        Ok(Window { start, end })
    }

    /// Whether the window is open at `unix_secs` (seconds since the epoch, UTC).
    pub fn contains(&self, unix_secs: u64) -> bool {
        let minute = u16::try_from((unix_secs % 86_400) / 60).unwrap_or(0);
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400 * 20_000;

    fn at(h: u64, m: u64) -> u64 {
        DAY + h * 3600 + m * 60
    }

    #[test]
    fn plain_and_wrapping_windows() {
        let w = Window::parse("02:00-04:00").expect("parses");
        assert_eq!(w.to_string(), "02:00-04:00");
        assert!(!w.contains(at(1, 59)));
        assert!(w.contains(at(2, 0)));
        assert!(w.contains(at(3, 59) + 59));
        assert!(!w.contains(at(4, 0)));
        let w = Window::parse("23:30-00:15").expect("parses");
        assert!(w.contains(at(23, 30)));
        assert!(w.contains(at(0, 0)));
        assert!(w.contains(at(0, 14)));
        assert!(!w.contains(at(0, 15)));
        assert!(!w.contains(at(12, 0)));
    }

    #[test]
    fn bad_windows_are_refused() {
        for (s, words) in [
            ("02:00", "not HH:MM-HH:MM"),
            ("2:00-04:00", "not HH:MM"),
            ("24:00-04:00", "not a time of day"),
            ("02:60-04:00", "not a time of day"),
            ("02:00-02:00", "empty"),
            ("aa:bb-04:00", "not HH:MM"),
        ] {
            let e = Window::parse(s).expect_err(s);
            assert!(e.contains(words), "{s}: {e}");
        }
    }
}
