//! The lab clock (ARCHITECTURE.md section 6).
//!
//! Every process of a lab gets the same lab epoch, the same real-time origin and the same speed
//! factor, so `lab time = epoch + (real now - origin) × speed` agrees across processes. Product
//! delays (keep-alive, upload interval, scoring cycle) are expressed in lab time and slept for
//! `lab / speed` real time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The shared lab clock. Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabClock {
    /// Lab time at the origin, Unix nanoseconds.
    epoch_ns: i128,
    /// Real time at the origin, Unix nanoseconds.
    origin_ns: i128,
    /// Lab seconds per real second.
    speed: f64,
    /// Offset of the lab's local time zone from UTC, in minutes (the FortiOS `tz` field).
    tz_minutes: i32,
}

impl Default for LabClock {
    fn default() -> Self {
        Self::real()
    }
}

fn real_now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

impl LabClock {
    /// Lab time = real time.
    pub fn real() -> Self {
        let now = real_now_ns();
        Self {
            epoch_ns: now,
            origin_ns: now,
            speed: 1.0,
            tz_minutes: 0,
        }
    }

    /// A clock from explicit parameters (what the orchestrator passes to every device).
    pub fn new(epoch_ms: i64, origin_ms: i64, speed: f64, tz_minutes: i32) -> Self {
        let speed = if speed.is_finite() && speed > 0.0 {
            speed
        } else {
            1.0
        };
        Self {
            epoch_ns: epoch_ms as i128 * 1_000_000,
            origin_ns: origin_ms as i128 * 1_000_000,
            speed,
            tz_minutes,
        }
    }

    /// A clock starting now at `epoch_ms` lab time and running `speed` times real time.
    pub fn starting_now(epoch_ms: i64, speed: f64, tz_minutes: i32) -> Self {
        Self::new(
            epoch_ms,
            (real_now_ns() / 1_000_000) as i64,
            speed,
            tz_minutes,
        )
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }

    pub fn epoch_ms(&self) -> i64 {
        (self.epoch_ns / 1_000_000) as i64
    }

    pub fn origin_ms(&self) -> i64 {
        (self.origin_ns / 1_000_000) as i64
    }

    pub fn tz_minutes(&self) -> i32 {
        self.tz_minutes
    }

    /// Lab time now, Unix nanoseconds.
    pub fn now_ns(&self) -> i64 {
        let elapsed = (real_now_ns() - self.origin_ns) as f64 * self.speed;
        (self.epoch_ns + elapsed as i128) as i64
    }

    /// Lab time now, Unix seconds.
    pub fn now_secs(&self) -> i64 {
        self.now_ns().div_euclid(1_000_000_000)
    }

    /// Real duration corresponding to a lab duration.
    pub fn to_real(&self, lab: Duration) -> Duration {
        Duration::from_secs_f64(lab.as_secs_f64() / self.speed)
    }

    /// Lab duration corresponding to a real duration.
    pub fn to_lab(&self, real: Duration) -> Duration {
        Duration::from_secs_f64(real.as_secs_f64() * self.speed)
    }

    /// Sleeps for a lab duration.
    pub async fn sleep(&self, lab: Duration) {
        tokio::time::sleep(self.to_real(lab)).await
    }

    /// The FortiOS `tz` field, e.g. `"-0800"`.
    pub fn tz_string(&self) -> String {
        let sign = if self.tz_minutes < 0 { '-' } else { '+' };
        let m = self.tz_minutes.abs();
        format!("{sign}{:02}{:02}", m / 60, m % 60)
    }

    /// Lab-local civil date and time of a lab instant: (`YYYY-MM-DD`, `HH:MM:SS`).
    pub fn date_time(&self, unix_ns: i64) -> (String, String) {
        let secs = unix_ns.div_euclid(1_000_000_000) + self.tz_minutes as i64 * 60;
        format_date_time(secs)
    }

    /// Lab-local `YYYY-MM-DD HH:MM:SS` for a lab instant.
    pub fn display(&self, unix_ns: i64) -> String {
        let (d, t) = self.date_time(unix_ns);
        format!("{d} {t}")
    }

    /// The flags that pass this clock to a child process.
    pub fn to_args(&self) -> Vec<String> {
        vec![
            "--clock-epoch".into(),
            self.epoch_ms().to_string(),
            "--clock-origin".into(),
            self.origin_ms().to_string(),
            "--clock-speed".into(),
            self.speed.to_string(),
            "--clock-tz".into(),
            self.tz_minutes.to_string(),
        ]
    }
}

/// The calendar day of a day count since 1970-01-01 (the `time` crate's proleptic Gregorian
/// calendar), clamped to the years it represents (±9999).
fn date_of_days(days: i64) -> time::Date {
    const UNIX_JULIAN_DAY: i64 = 2_440_588;
    let jd = days.saturating_add(UNIX_JULIAN_DAY).clamp(
        time::Date::MIN.to_julian_day() as i64,
        time::Date::MAX.to_julian_day() as i64,
    );
    time::Date::from_julian_day(jd as i32).unwrap_or(time::Date::MIN)
}

/// `(YYYY-MM-DD, HH:MM:SS)` of a Unix second count (already shifted to local time).
pub fn format_date_time(secs: i64) -> (String, String) {
    let date = date_of_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    (
        format!(
            "{:04}-{:02}-{:02}",
            date.year(),
            u8::from(date.month()),
            date.day()
        ),
        format!("{:02}:{:02}:{:02}", rem / 3600, (rem % 3600) / 60, rem % 60),
    )
}

/// Days since 1970-01-01 → (year, month, day).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let date = date_of_days(days);
    (
        date.year() as i64,
        u8::from(date.month()) as u32,
        date.day() as u32,
    )
}

/// The weekday of a day count since 1970-01-01, 0 = Sunday .. 6 = Saturday (FortiOS's order
/// for `set day` and `trigger-weekday`).
pub fn weekday_from_days(days: i64) -> u32 {
    u32::from(date_of_days(days).weekday().number_days_from_sunday())
}

/// (year, month, day) → days since 1970-01-01; `None` for a date that does not exist
/// (2021-02-30) or lies outside years ±9999.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> Option<i64> {
    let month = time::Month::try_from(u8::try_from(m).ok()?).ok()?;
    let date = time::Date::from_calendar_date(i32::try_from(y).ok()?, month, u8::try_from(d).ok()?)
        .ok()?;
    Some(date.to_julian_day() as i64 - 2_440_588)
}

/// Parses `YYYY-MM-DD HH:MM:SS` (lab-local; minutes and seconds optional) into Unix seconds
/// given the tz offset in minutes. `None` for a date or time that does not exist.
pub fn parse_date_time(s: &str, tz_minutes: i32) -> Option<i64> {
    let s = s.trim();
    let (date, time) = s.split_once([' ', 'T']).unwrap_or((s, "00:00:00"));
    let mut dp = date.split('-');
    let y: i64 = dp.next()?.parse().ok()?;
    let m: u32 = dp.next()?.parse().ok()?;
    let d: u32 = dp.next()?.parse().ok()?;
    if dp.next().is_some() {
        return None;
    }
    let days = days_from_civil(y, m, d)?;
    let mut tp = time.split(':');
    let hh: u8 = tp.next()?.parse().ok()?;
    let mm: u8 = tp.next().unwrap_or("0").parse().ok()?;
    let ss: u8 = tp.next().unwrap_or("0").parse().ok()?;
    if tp.next().is_some() {
        return None;
    }
    let t = time::Time::from_hms(hh, mm, ss).ok()?;
    Some(
        days * 86_400 + t.hour() as i64 * 3600 + t.minute() as i64 * 60 + t.second() as i64
            - tz_minutes as i64 * 60,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for days in [-1000i64, 0, 1, 18_700, 20_000, 60_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), Some(days));
        }
        assert_eq!(days_from_civil(2021, 2, 29), None);
        assert_eq!(days_from_civil(2024, 2, 29), Some(19_782));
        assert_eq!(parse_date_time("2021-02-30 00:00:00", 0), None);
        assert_eq!(parse_date_time("2021-03-01 24:00:00", 0), None);
        assert_eq!(parse_date_time("2021-03-01 10:00", 0), Some(1_614_592_800));
        // Far outside the calendar: clamped, never a panic.
        assert_eq!(format_date_time(i64::MAX).0, "9999-12-31");
        assert_eq!(format_date_time(i64::MIN).0, "-9999-01-01");
        assert_eq!(
            format_date_time(1_557_790_185),
            ("2019-05-13".into(), "23:29:45".into())
        );
    }

    #[test]
    fn weekdays_across_month_year_and_leap_boundaries() {
        let wd = |y, m, d| weekday_from_days(days_from_civil(y, m, d).unwrap());
        // 1970-01-01 was a Thursday; the day before a Wednesday.
        assert_eq!(weekday_from_days(0), 4);
        assert_eq!(weekday_from_days(-1), 3);
        // Year boundaries: 2020-12-31 Thursday, 2021-01-01 Friday; 2023-12-31 Sunday,
        // 2024-01-01 Monday.
        assert_eq!((wd(2020, 12, 31), wd(2021, 1, 1)), (4, 5));
        assert_eq!((wd(2023, 12, 31), wd(2024, 1, 1)), (0, 1));
        // Leap years: 2024-02-29 Thursday then 2024-03-01 Friday; 2023-02-28 Tuesday then
        // 2023-03-01 Wednesday; 2000 (divisible by 400) has 29 February, a Tuesday; 1900 does
        // not, so its 1 March follows 28 February (Wednesday → Thursday).
        assert_eq!(
            (wd(2024, 2, 28), wd(2024, 2, 29), wd(2024, 3, 1)),
            (3, 4, 5)
        );
        assert_eq!((wd(2023, 2, 28), wd(2023, 3, 1)), (2, 3));
        assert_eq!(wd(2000, 2, 29), 2);
        assert_eq!(days_from_civil(1900, 2, 29), None);
        assert_eq!((wd(1900, 2, 28), wd(1900, 3, 1)), (3, 4));
        // Month ends: 2021-04-30 Friday, 2021-05-01 Saturday.
        assert_eq!((wd(2021, 4, 30), wd(2021, 5, 1)), (5, 6));
        // Seven days on is the same weekday, across any boundary.
        for days in [-800i64, -1, 0, 11_016, 19_781, 19_782, 20_000] {
            assert_eq!(weekday_from_days(days), weekday_from_days(days + 7));
        }
        // Clamped far outside the calendar, never a panic.
        let _ = (weekday_from_days(i64::MIN), weekday_from_days(i64::MAX));
    }

    #[test]
    fn speed_scales_lab_time_and_sleeps() {
        let c = LabClock::starting_now(1_600_000_000_000, 100.0, -480);
        assert_eq!(
            c.to_real(Duration::from_secs(60)),
            Duration::from_millis(600)
        );
        let t = c.now_ns();
        assert!(t >= 1_600_000_000_000_000_000);
        assert_eq!(c.tz_string(), "-0800");
        let (d, tm) = c.date_time(1_600_000_000_000_000_000);
        assert_eq!((d.as_str(), tm.as_str()), ("2020-09-13", "04:26:40"));
        assert_eq!(
            parse_date_time("2020-09-13 04:26:40", -480),
            Some(1_600_000_000)
        );
    }

    #[test]
    fn two_clocks_with_same_parameters_agree() {
        let a = LabClock::new(1_000, 2_000, 10.0, 0);
        let b = LabClock::new(1_000, 2_000, 10.0, 0);
        let (x, y) = (a.now_ns(), b.now_ns());
        assert!((y - x).abs() < 50_000_000, "{x} vs {y}");
    }
}
